"""The audit chain and the attestation stores on real SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError

from confide.attestation import EnclaveBinding, Measurement, Policy, verify_attestation
from confide.attestation.sim import SimAttester, SimVerifier
from confide.crypto.signing import SigningKey
from confide.db import audit, make_engine, upgrade
from confide.db.audit import (
    Head,
    append,
    append_now,
    entries,
    head_columns,
    lock,
    verify_chain,
)
from confide.db.schema import attest_nonces, audit_log, sim_platforms
from confide.db.stores import DatabaseNonceStore, DatabasePlatformRegistry
from confide.errors import AttestationError, ConfideError

NOW = 1_800_000_000


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    upgrade(engine)
    return engine


def test_audit_chain_appends_and_verifies(engine: Engine) -> None:
    for index in range(5):
        append_now(
            engine,
            at=NOW + index,
            actor="0xa",
            action="secret.write",
            subject=f"requester/x{index}",
            detail={"version": 1},
        )
    with engine.connect() as connection:
        assert verify_chain(connection) == 5
        log = entries(connection)
    assert [e.seq for e in log] == [0, 1, 2, 3, 4]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(log))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("detail", '{"version": 2}', "was altered"), ("actor", "0xb", "was altered")],
)
def test_audit_tampering_is_found(engine: Engine, column: str, value: str, message: str) -> None:
    for index in range(3):
        append_now(
            engine, at=NOW, actor="0xa", action="a", subject=f"s{index}", detail={"version": 1}
        )
    with engine.begin() as connection:
        connection.execute(update(audit_log).where(audit_log.c.seq == 1).values({column: value}))
    with engine.connect() as connection, pytest.raises(ConfideError, match=message):
        verify_chain(connection)


def test_a_forked_chain_is_refused_by_the_database(engine: Engine) -> None:
    with engine.begin() as connection:
        append(connection, at=NOW, actor="a", action="a", subject="s")
    with pytest.raises(Exception), engine.begin() as connection:  # noqa: B017, PT011
        connection.execute(
            audit_log.insert().values(
                seq=1,
                prev_hash="0" * 64,
                hash="1" * 64,
                at=NOW,
                actor="x",
                action="x",
                subject="x",
                detail="{}",
            )
        )


def test_a_head_read_with_other_columns_is_appended_to(engine: Engine) -> None:
    """``head_columns`` read after ``lock`` continue the chain (from empty, and after an
    entry); a head that another entry passed is refused by the database, never forked."""
    for expected in (0, 1):
        with engine.begin() as connection:
            lock(connection)
            row = connection.execute(select(*head_columns())).one()
            head = Head(row.audit_seq, row.audit_hash)
            entry = append(connection, at=NOW, actor="a", action="a", subject="s", head=head)
        assert entry.seq == expected
    with engine.begin() as connection:
        row = connection.execute(select(*head_columns())).one()
    append_now(engine, at=NOW, actor="b", action="b", subject="s")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        append(
            connection,
            at=NOW,
            actor="c",
            action="c",
            subject="s",
            head=Head(row.audit_seq, row.audit_hash),
        )
    with engine.connect() as connection:
        assert verify_chain(connection) == 3


def test_the_audit_lock_is_taken_once_per_transaction(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the advisory lock is asked for once in a transaction (a second
    ``lock`` there sends nothing) and again in the next transaction on the same pooled
    connection, where it is held too (seen from another connection) until the commit."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises writers: no lock statement")
    sent: list[object] = []
    statement = audit._LOCK  # counting what is sent
    real = statement.execute

    def counted(*args: Any) -> int:
        sent.append(args)
        return real(*args)

    monkeypatch.setattr(statement, "execute", counted)
    held = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = :pid")
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        connection.commit()
        for transaction in (1, 2):
            with connection.begin():
                lock(connection)
                lock(connection)
                assert len(sent) == transaction
                with engine.connect() as other:
                    assert other.execute(held, {"pid": pid}).scalar() == 1
            with engine.connect() as other:  # committed: released
                assert other.execute(held, {"pid": pid}).scalar() == 0


def test_concurrent_appends_keep_one_gapless_chain(engine: Engine) -> None:
    def writer(name: str) -> None:
        for index in range(15):
            append_now(engine, at=NOW, actor=name, action="a", subject=str(index))

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with engine.connect() as connection:
        assert verify_chain(connection) == 45


def test_database_nonces_are_single_use_shared_and_expire(
    engine: Engine, database_url: str
) -> None:
    store = DatabaseNonceStore(engine)
    nonce = store.issue(NOW)
    replica = DatabaseNonceStore(make_engine(database_url))  # another sms process
    replica.consume(nonce, NOW + 1)
    with pytest.raises(AttestationError, match="already used"):
        store.consume(nonce, NOW + 2)
    late = store.issue(NOW)
    with pytest.raises(AttestationError, match="expired"):
        store.consume(late, NOW + 61)


def test_sim_attestation_against_the_database_stores(engine: Engine) -> None:
    platform = SigningKey.generate()
    registry = DatabasePlatformRegistry(engine)
    assert registry.register(platform.public_bytes(), "0xowner", NOW)
    assert not registry.register(platform.public_bytes(), "0xowner", NOW)
    nonces = DatabaseNonceStore(engine)
    app = Measurement("sim", "ab" * 32)
    binding = EnclaveBinding(bytes(32), bytes(32), "sms", "session", "app", "0xw")
    nonce = nonces.issue(NOW)
    evidence = SimAttester(platform, app).evidence(binding.report_data(nonce))
    verdict = verify_attestation(
        evidence,
        nonce=nonce,
        binding=binding,
        policy=Policy(measurements=frozenset({app}), tolerate=frozenset({"simulation"})),
        verifiers={"sim": SimVerifier(registry)},
        nonces=nonces,
        now=NOW,
    )
    assert verdict.ok, verdict.reasons
    stranger = SimAttester(SigningKey.generate(), app)
    nonce = nonces.issue(NOW)
    refused = verify_attestation(
        stranger.evidence(binding.report_data(nonce)),
        nonce=nonce,
        binding=binding,
        policy=Policy(measurements=frozenset({app}), tolerate=frozenset({"simulation"})),
        verifiers={"sim": SimVerifier(registry)},
        nonces=nonces,
        now=NOW,
    )
    assert "is not registered" in refused.reasons[0]


def _live_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(attest_nonces)).scalar_one())


def test_challenges_are_swept_every_few_and_stay_bounded(engine: Engine) -> None:
    """The sweep (expired rows out, the cap checked) runs once per ``sweep_every``
    challenges, and on every one while the table is full: it holds at most
    ``limit + sweep_every`` rows per process."""
    store = DatabaseNonceStore(engine, limit=1000, sweep_every=10)
    issued = 0

    def issue_until_refused() -> None:
        nonlocal issued
        for _ in range(2000):
            store.issue(NOW)
            issued += 1

    with pytest.raises(AttestationError, match="too many outstanding"):
        issue_until_refused()
    assert 1000 <= issued <= 1000 + 10
    assert _live_rows(engine) == issued
    for _ in range(3):  # refused again, each time (the sweep runs on every call)
        with pytest.raises(AttestationError, match="too many outstanding"):
            store.issue(NOW + 1)
    nonce = store.issue(NOW + 61)  # all expired: the sweep that ran now removed them
    assert _live_rows(engine) == 1
    store.consume(nonce, NOW + 62)


def test_a_nonce_taken_in_a_transaction_is_used_once(engine: Engine) -> None:
    store = DatabaseNonceStore(engine)
    nonce = store.issue(NOW)
    with engine.connect() as connection:
        store.peek(connection, nonce, NOW + 1)  # live; uses nothing up
        with pytest.raises(AttestationError, match="expired"):
            store.peek(connection, nonce, NOW + 60)
    with engine.begin() as connection:  # rolled back: still there
        assert store.take(connection, nonce, NOW + 1)
        connection.rollback()
    with engine.begin() as connection:
        assert not store.take(connection, nonce, NOW + 60)  # expired: not usable
        connection.rollback()
    with engine.begin() as connection:
        assert store.take(connection, nonce, NOW + 1)
    with engine.begin() as connection:
        assert not store.take(connection, nonce, NOW + 1)
    with engine.connect() as connection, pytest.raises(AttestationError, match="already used"):
        store.peek(connection, nonce, NOW + 1)


def test_platform_owners_are_remembered_but_not_their_absence(engine: Engine) -> None:
    registry = DatabasePlatformRegistry(engine)
    key = SigningKey.generate().public_bytes()
    assert registry.owner(key) is None
    assert not DatabasePlatformRegistry(engine).is_registered(key)
    assert DatabasePlatformRegistry(engine).register(key, "0xowner", NOW)  # elsewhere
    assert registry.owner(key) == "0xowner"  # an absence was not remembered
    with engine.begin() as connection:  # (never done by the sms: keys are not re-owned)
        connection.execute(update(sim_platforms).values(owner="0xother"))
    assert registry.owner(key) == "0xowner"  # remembered
    assert DatabasePlatformRegistry(engine).owner(key) == "0xother"


def test_an_appender_chains_in_memory_and_writes_together(engine: Engine) -> None:
    """Entries of one transaction chained in memory and inserted by one multi-row INSERT, with
    another writer's entry in between (after a flush): one gapless chain, and nothing
    written until the flush."""
    append_now(engine, at=NOW, actor="0xa", action="secret.write", subject="before")
    with engine.begin() as connection:
        lock(connection)
        log = audit.Appender(connection)
        first = log.append(at=NOW, actor="enclave", action="attest.granted", subject="a")
        second = log.append(at=NOW, actor="enclave", action="attest.refused", subject="b")
        assert (first.seq, second.seq, second.prev_hash) == (1, 2, first.hash)
        assert connection.execute(select(func.count()).select_from(audit_log)).scalar() == 1
        log.forget_head()  # flushed: a secret write appends next, reading the head
        append(connection, at=NOW, actor="0xa", action="secret.write", subject="key")
        third = log.append(at=NOW, actor="enclave", action="attest.granted", subject="c")
        assert third.seq == 4
        log.flush()
    with engine.connect() as connection:
        assert verify_chain(connection) == 5
        assert [e.subject for e in entries(connection)] == ["before", "a", "b", "key", "c"]


def test_nonces_are_taken_many_at_once_each_once(engine: Engine, database_url: str) -> None:
    """One statement uses up a batch's nonces: each one found once (a repeat in the batch
    is one), with its expiry; one used before, or unknown, is not found."""
    store = DatabaseNonceStore(engine)
    live = [store.issue(NOW) for _ in range(3)]
    used = store.issue(NOW)
    store.consume(used, NOW)
    with engine.begin() as connection:
        found = store.take_many(connection, [live[0], live[1], live[0], used, b"\x07" * 32])
    assert found == {live[0]: NOW + 60, live[1]: NOW + 60}
    with engine.begin() as connection:  # and a replica finds them gone
        replica = DatabaseNonceStore(make_engine(database_url))
        assert replica.take_many(connection, live) == {live[2]: NOW + 60}
