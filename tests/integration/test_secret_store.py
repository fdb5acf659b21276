"""The secret store on real SQLite and PostgreSQL: create-only, versions, no plaintext."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update

from confide.attestation.measurement import Measurement
from confide.crypto.envelope import KeyEncryptionKey
from confide.db import audit, make_engine, upgrade
from confide.db.audit import entries, verify_chain
from confide.db.schema import secrets
from confide.errors import SecretError
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secrets import (
    BATCH,
    MAX_VALUE_BYTES,
    SecretExistsError,
    SecretNotFoundError,
    SecretRef,
    SecretStore,
)

NOW = 1_800_000_000
ALICE = "0x" + "a1" * 20
VALUE = b"TOP-SECRET-VALUE-4242"


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    upgrade(engine)
    return engine


@pytest.fixture
def store(engine: Engine, tmp_path: Path) -> SecretStore:
    return SecretStore(engine, KeyEncryptionKey.load_or_create(tmp_path / "kek"))


X1 = SecretRef(ALICE, "requester", "x1")


def test_existence_found_is_remembered_and_absence_is_read_again(
    engine: Engine, tmp_path: Path
) -> None:
    """Two stores on one database, as two replicas: an absence is never remembered (the
    other replica's write is seen at once); a secret seen to exist is answered without a
    read (nothing in the sms deletes one), and the cache is bounded."""
    kek = KeyEncryptionKey.load_or_create(tmp_path / "kek")
    one, two = SecretStore(engine, kek, cache_size=2), SecretStore(engine, kek)
    assert not one.exists(X1) and not one.known(X1)
    two.put(X1, VALUE, update=False, now=NOW)
    assert two.known(X1)  # its own committed write
    assert not one.known(X1) and one.exists(X1) and one.known(X1)
    with engine.begin() as connection:  # what no sms path does: the row removed by hand
        connection.execute(secrets.delete())
    assert one.exists(X1)  # remembered: no read
    assert not one.exists(SecretRef(ALICE, "requester", "x2"))  # read: not there
    for name in ("a", "b"):  # the cache holds at most 2: full, it starts again
        ref = SecretRef(ALICE, "requester", name)
        one.put(ref, VALUE, update=False, now=NOW)
    assert not one.known(X1)


def test_exists_many_reads_a_batch_and_remembers_what_it_found(
    engine: Engine, tmp_path: Path
) -> None:
    """More references than one statement takes, some there, some not, one twice; one
    known already; a secret of the same name under another owner or kind is not it."""
    kek = KeyEncryptionKey.load_or_create(tmp_path / "kek")
    one, two = SecretStore(engine, kek), SecretStore(engine, kek)
    refs = [SecretRef(ALICE, "requester", f"s{i}") for i in range(BATCH + 9)]
    present = set(refs[::3])
    for ref in present:
        two.put(ref, VALUE, update=False, now=NOW)
    one.exists(refs[0])  # known to ``one`` before the batch
    other_owner = SecretRef("0x" + "b2" * 20, "requester", "s1")
    other_kind = SecretRef(ALICE, "app", "s1", subject="0x" + "c3" * 20)
    asked = [*refs, refs[3], other_owner, other_kind]
    assert one.exists_many(asked) == present
    assert all(one.known(ref) for ref in present)
    assert not any(one.known(ref) for ref in set(asked) - present)
    assert one.exists_many([]) == set()
    with pytest.raises(SecretError, match="not allowed"):
        one.exists_many([SecretRef(ALICE, "requester", "../x")])


def test_writers_take_the_audit_lock_before_a_secret_row(
    engine: Engine, store: SecretStore
) -> None:
    """One lock order for every writer (the audit log's lock, then rows): a push that
    waits for the lock has not yet inserted its row, so a transaction holding the lock
    can insert the same secret (as a grant making a volume key does) without a deadlock;
    the push then finds it and is refused as create-only."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises writers")
    ref = SecretRef(ALICE, "volume", "output", subject="cubic")
    outcome: list[BaseException | int] = []
    with engine.connect() as holder:
        holder.begin()
        audit.lock(holder)
        pusher = threading.Thread(target=lambda: outcome.append(_put(store, ref)))
        pusher.start()
        waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        deadline = time.monotonic() + 10
        with engine.connect() as probe:
            while probe.execute(waiting).scalar() == 0:
                assert time.monotonic() < deadline, "the push never waited for the lock"
                time.sleep(0.01)
        assert store.put_in(holder, ref, b"k" * 32, update=False, now=NOW) == 1
        holder.commit()
    pusher.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], SecretExistsError), outcome


def _put(store: SecretStore, ref: SecretRef) -> BaseException | int:
    try:
        return store.put(ref, b"p" * 32, update=False, now=NOW)
    except Exception as exc:  # the test inspects it
        return exc


def test_create_only_then_versions(store: SecretStore, engine: Engine) -> None:
    assert not store.exists(X1)
    assert store.put(X1, VALUE, update=False, now=NOW) == 1
    assert store.exists(X1)
    with pytest.raises(SecretExistsError, match=r"exists \(version 1\); use --update"):
        store.put(X1, b"other", update=False, now=NOW)
    assert store.put(X1, b"rotated", update=True, now=NOW) == 2
    assert store.latest(X1) == (2, b"rotated")
    with pytest.raises(SecretNotFoundError):
        store.put(SecretRef(ALICE, "requester", "new"), b"v", update=True, now=NOW)
    with engine.connect() as connection:
        log = entries(connection)
        assert verify_chain(connection) == 2
    assert [(e.action, e.subject, e.detail) for e in log] == [
        ("secret.write", "requester/x1", {"version": 1}),
        ("secret.write", "requester/x1", {"version": 2}),
    ]


def test_no_plaintext_in_the_database_file(store: SecretStore, database_url: str) -> None:
    store.put(X1, VALUE, update=False, now=NOW)
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert VALUE not in raw
    with store._engine.connect() as connection:
        row = connection.execute(select(secrets)).one()
    assert VALUE not in bytes(row.ciphertext) + bytes(row.wrapped_key)


def test_a_ciphertext_moved_to_another_row_is_refused(store: SecretStore, engine: Engine) -> None:
    other = SecretRef(ALICE, "requester", "x2")
    store.put(X1, VALUE, update=False, now=NOW)
    store.put(other, b"the other value", update=False, now=NOW)
    with engine.begin() as connection:
        source = connection.execute(select(secrets).where(secrets.c.name == "x1")).one()
        connection.execute(
            update(secrets)
            .where(secrets.c.name == "x2")
            .values(wrapped_key=source.wrapped_key, ciphertext=source.ciphertext)
        )
    with pytest.raises(SecretError, match="failed authentication"):
        store.latest(other)
    assert store.latest(X1) == (1, VALUE)


@pytest.mark.parametrize(
    "name", ["", "a/b", "../x", "x" * 65, "é", "x1; DROP TABLE secrets", "a b", "x\x00"]
)
def test_bad_names_are_refused(store: SecretStore, name: str) -> None:
    with pytest.raises(SecretError, match="is not allowed"):
        store.put(SecretRef(ALICE, "requester", name), b"v", update=False, now=NOW)


def test_size_limit_and_namespaces(store: SecretStore) -> None:
    with pytest.raises(SecretError, match="64 KiB"):
        store.put(X1, b"x" * (MAX_VALUE_BYTES + 1), update=False, now=NOW)
    assert store.put(X1, b"x" * MAX_VALUE_BYTES, update=False, now=NOW) == 1
    bob = SecretRef("0x" + "b2" * 20, "requester", "x1")
    assert not store.exists(bob)  # same name, other owner: another secret
    app = SecretRef(ALICE, "app", "1", subject="0x" + "c3" * 20)
    assert store.put(app, b"app secret", update=False, now=NOW) == 1
    assert not store.exists(SecretRef(ALICE, "app", "1", subject="0x" + "d4" * 20))


STRICT = ReleasePolicy(
    tee=frozenset({"sgx"}),
    tolerate=frozenset({"outdated-tcb"}),
    apps=frozenset({Measurement.parse("sgx:" + "ab" * 32)}),
    requesters=frozenset({"0x" + "b2" * 20}),
    workerpools=frozenset({"0x" + "c3" * 20}),
)
DATASET = SecretRef(ALICE, "dataset", "key", subject="0x" + "d4" * 20)


def test_the_release_policy_round_trips_and_is_audited(store: SecretStore, engine: Engine) -> None:
    assert store.put(DATASET, VALUE, update=False, now=NOW, policy=STRICT) == 1
    released = store.release(DATASET)
    assert (released.version, released.value, released.policy) == (1, VALUE, STRICT)
    assert VALUE.decode() not in repr(released)
    assert store.put(DATASET, b"v2", update=True, now=NOW) == 2  # a version, its own policy
    assert store.release(DATASET).policy == ReleasePolicy()
    assert store.latest(DATASET) == (2, b"v2")
    with engine.connect() as connection:
        details = [e.detail for e in entries(connection)]
    assert details == [{"version": 1, "policy": STRICT.to_json()}, {"version": 2}]


def test_a_policy_edited_in_the_database_makes_the_secret_unreleasable(
    store: SecretStore, engine: Engine
) -> None:
    store.put(DATASET, VALUE, update=False, now=NOW, policy=STRICT)
    widened = ReleasePolicy(tee=frozenset({"sgx", "sim"}), tolerate=frozenset({"simulation"}))
    for edited in (widened.canonical(), ""):  # widened, or dropped to the default
        with engine.begin() as connection:
            connection.execute(update(secrets).values(policy=edited))
        with pytest.raises(SecretError, match=r"failed authentication.*release policy"):
            store.release(DATASET)
    with engine.begin() as connection:
        connection.execute(update(secrets).values(policy=STRICT.canonical()))
    assert store.release(DATASET).value == VALUE  # put back as sealed: it opens again


def test_an_app_secret_moved_to_a_dataset_row_does_not_open(
    store: SecretStore, engine: Engine
) -> None:
    app = SecretRef(ALICE, "app", "1", subject="0x" + "e5" * 20)
    store.put(app, VALUE, update=False, now=NOW)
    store.put(DATASET, b"dataset key", update=False, now=NOW)
    with engine.begin() as connection:
        source = connection.execute(select(secrets).where(secrets.c.kind == "app")).one()
        connection.execute(
            update(secrets)
            .where(secrets.c.kind == "dataset")
            .values(wrapped_key=source.wrapped_key, ciphertext=source.ciphertext)
        )
    with pytest.raises(SecretError, match="failed authentication"):
        store.release(DATASET)


def test_update_none_creates_then_adds_versions(store: SecretStore) -> None:
    key = SecretRef(ALICE, "result-key", "result-key")
    assert [store.put(key, bytes([i]) * 32, update=None, now=NOW) for i in (1, 2)] == [1, 2]
    assert store.latest(key) == (2, b"\x02" * 32)
