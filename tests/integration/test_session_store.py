"""CAS sessions on real SQLite and PostgreSQL: namespaces, access, compare-and-swap."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from confide.crypto.envelope import KeyEncryptionKey
from confide.db import make_engine, upgrade
from confide.sms.secrets import SecretRef, SecretStore
from confide.sms.session_document import parse_session
from confide.sms.sessions import (
    SessionConflictError,
    SessionForbiddenError,
    SessionNotFoundError,
    SessionStore,
    successor_exists,
)

NOW = 1_800_000_000
ALICE, BOB, CAROL = ("0x" + c * 20 for c in ("a1", "b2", "c3"))
TEXT = (
    """\
name: cubic
version: "1"
predecessor: PRED
access_policy: {read: [owner, BOB], update: [owner]}
services:
  - name: app
    measurements: ["sim:"""
    + "ab" * 32
    + """"]
    command: python3 app.py
    environment: {API_KEY: "$$confide:secrets:api_key$$"}
secrets:
  - {name: api_key, kind: ascii, value: "VERY-SECRET-VALUE"}
  - {name: generated, kind: key}
"""
)


def _doc(predecessor: str | None = None, command: str = "python3 app.py"):  # type: ignore[no-untyped-def]
    text = TEXT.replace("PRED", predecessor or "null").replace("BOB", BOB)
    return parse_session(text.replace("python3 app.py", command), {})


@pytest.fixture
def stores(database_url: str, tmp_path: Path) -> tuple[SessionStore, SecretStore, Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    secrets = SecretStore(engine, KeyEncryptionKey.load_or_create(tmp_path / "kek"))
    return SessionStore(engine, secrets), secrets, engine


def test_create_read_update_and_history(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, secrets, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    assert "VERY-SECRET-VALUE" not in str(first.document)
    assert store.current(ALICE, ALICE, "cubic").hash == first.hash
    assert store.current(BOB, ALICE, "cubic").hash == first.hash  # listed reader
    with pytest.raises(SessionForbiddenError, match="may not read"):
        store.current(CAROL, ALICE, "cubic")
    with pytest.raises(SessionForbiddenError, match="may not update"):
        store.update(BOB, ALICE, _doc(first.hash, "python3 v2.py"), NOW + 1)
    second = store.update(ALICE, ALICE, _doc(first.hash, "python3 v2.py"), NOW + 1)
    assert [s.hash for s in store.history(ALICE, ALICE, "cubic")] == [first.hash, second.hash]
    ref = SecretRef(ALICE, "session", "api_key", subject=f"cubic@{second.hash[:16]}")
    assert secrets.latest(ref)[1] == b"VERY-SECRET-VALUE"
    generated = SecretRef(ALICE, "session", "generated", subject=f"cubic@{second.hash[:16]}")
    assert len(secrets.latest(generated)[1]) == 64
    original = SecretRef(ALICE, "session", "generated", subject=f"cubic@{first.hash[:16]}")
    assert secrets.latest(generated)[1] == secrets.latest(original)[1]  # carried forward


def test_a_generated_secret_declared_anew_gets_a_new_value(
    stores: tuple[SessionStore, SecretStore, Engine],
) -> None:
    store, secrets, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    renamed = TEXT.replace("{name: generated, kind: key}", "{name: generated2, kind: key}")
    text = renamed.replace("PRED", first.hash).replace("BOB", BOB)
    second = store.update(ALICE, ALICE, parse_session(text, {}), NOW + 1)
    before = SecretRef(ALICE, "session", "generated", subject=f"cubic@{first.hash[:16]}")
    after = SecretRef(ALICE, "session", "generated2", subject=f"cubic@{second.hash[:16]}")
    assert secrets.latest(before)[1] != secrets.latest(after)[1]


def test_stale_predecessor_and_duplicates(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, _, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    with pytest.raises(SessionConflictError, match="already exists"):
        store.create(ALICE, _doc(), NOW)
    store.update(ALICE, ALICE, _doc(first.hash, "python3 v2.py"), NOW + 1)
    with pytest.raises(SessionConflictError, match="is not the current hash") as info:
        store.update(ALICE, ALICE, _doc(first.hash, "python3 v3.py"), NOW + 2)
    assert first.hash in str(info.value)
    assert (
        store.current(ALICE, ALICE, "cubic").document["services"][0]["command"] == "python3 v2.py"
    )


def test_namespaces_prevent_squatting(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, _, _ = stores
    mine = store.create(ALICE, _doc(), NOW)
    theirs = store.create(BOB, _doc(), NOW)  # same name, another owner: another session
    assert mine.owner != theirs.owner
    with pytest.raises(SessionNotFoundError):
        store.current(CAROL, CAROL, "cubic")


def test_concurrent_updates_one_wins(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    store, _, _ = stores
    first = store.create(ALICE, _doc(), NOW)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def updater(command: str) -> None:
        barrier.wait()
        try:
            store.update(ALICE, ALICE, _doc(first.hash, command), NOW + 1)
            outcomes.append("won")
        except SessionConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=updater, args=(f"python3 {n}.py",)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["lost", "won"]
    assert len(store.history(ALICE, ALICE, "cubic")) == 2


def test_session_and_its_secrets_are_written_together(
    stores: tuple[SessionStore, SecretStore, Engine],
) -> None:
    store, secrets, _ = stores
    from confide.errors import SecretError

    huge = _doc().__class__(
        **{
            **_doc().__dict__,
            "secrets": tuple(
                s.__class__(s.name, s.kind, "x" * 70_000 if s.name == "generated" else s.value)
                for s in _doc().secrets
            ),
        }
    )
    with pytest.raises(SecretError, match="64 KiB"):
        store.create(ALICE, huge, NOW)
    with pytest.raises(SessionNotFoundError):
        store.current(ALICE, ALICE, "cubic")
    digest = huge.session_hash()
    assert not secrets.exists(
        SecretRef(ALICE, "session", "api_key", subject=f"cubic@{digest[:16]}")
    )


def test_current_version_is_only_the_head(stores: tuple[SessionStore, SecretStore, Engine]) -> None:
    """What attestation reads: the named version if no version follows it (the parsed
    document is kept per version; whether it is current is read every time)."""
    store, _, engine = stores
    first = store.create(ALICE, _doc(), NOW)
    found = store.current_version(ALICE, "cubic", first.hash)
    assert found is not None and found.document == first.document
    assert store.current_version(ALICE, "cubic", first.hash) is found  # kept
    assert store.current_version(BOB, "cubic", first.hash) is None  # another namespace
    assert store.current_version(ALICE, "other", first.hash) is None
    assert store.current_version(ALICE, "cubic", "0" * 64) is None
    second = store.update(ALICE, ALICE, _doc(first.hash, command="python3 v2.py"), NOW + 1)
    assert store.current_version(ALICE, "cubic", first.hash) is None  # no longer current
    head = store.current_version(ALICE, "cubic", second.hash)
    assert head is not None and head.predecessor == first.hash
    assert head.document == store.current(ALICE, ALICE, "cubic").document
    with engine.connect() as connection:
        for digest, superseded in ((first.hash, True), (second.hash, False)):
            params = {"owner": ALICE, "name": "cubic", "hash": digest}
            assert connection.execute(select(successor_exists()), params).scalar() is superseded
