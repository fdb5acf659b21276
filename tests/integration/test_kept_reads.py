"""Kept read connections (``confide.db.engine.KeptReads``) on a real PostgreSQL: one per
adopted thread, replaced when its peer closed it, closed at the end."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.pool import QueuePool

from confide.db import make_engine, reading, upgrade
from confide.db.engine import KeptReads
from confide.sms.http_common import SmsHandlers
from confide.sms.secrets import SecretRef
from confide.sms.service import Sms, SmsConfig

PID = text("SELECT pg_backend_pid()")
REF = SecretRef("0x" + "a1" * 20, "requester", "x1")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    if not database_url.startswith("postgresql"):
        pytest.skip("reads are kept on PostgreSQL only (SQLite reads in place)")
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _backend(engine: Engine) -> int:
    with reading(engine) as connection:
        return int(connection.execute(PID).scalar_one())


def _checked_out(engine: Engine) -> int:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


def _alive(engine: Engine, pid: int) -> bool:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar_one()
    return bool(found)


def test_an_adopted_thread_keeps_one_connection_and_others_do_not(engine: Engine) -> None:
    keeper = KeptReads(engine)
    with ThreadPoolExecutor(1, initializer=keeper.adopt) as adopted:
        first = adopted.submit(_backend, engine).result()
        assert adopted.submit(_backend, engine).result() == first  # kept
        assert _backend(engine) != first  # this thread was not adopted: from the pool
        other = make_engine(engine.url.render_as_string(hide_password=False))
        try:  # another engine on an adopted thread: not this keeper's
            assert adopted.submit(_backend, other).result() != first
        finally:
            other.dispose()
    assert _checked_out(engine) == 1  # the keeper's
    keeper.close()
    assert _checked_out(engine) == 0  # given back to the pool


def test_a_kept_connection_closed_by_its_peer_is_replaced_without_an_error(
    engine: Engine,
) -> None:
    keeper = KeptReads(engine)
    with ThreadPoolExecutor(1, initializer=keeper.adopt) as adopted:
        first = adopted.submit(_backend, engine).result()
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            admin.commit()
        deadline = time.monotonic() + 10
        while _alive(engine, first):  # ended: its end of file is on the kept socket
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = adopted.submit(_backend, engine).result()  # no error: replaced
        assert second != first
        assert adopted.submit(_backend, engine).result() == second
    keeper.close()
    assert _checked_out(engine) == 0


def test_a_read_that_fails_leaves_the_kept_connection_usable(engine: Engine) -> None:
    keeper = KeptReads(engine)

    def failing() -> None:
        with reading(engine) as connection:
            connection.execute(text("SELECT 1 / 0"))

    with ThreadPoolExecutor(1, initializer=keeper.adopt) as adopted:
        first = adopted.submit(_backend, engine).result()
        with pytest.raises(Exception, match="division by zero"):
            adopted.submit(failing).result()
        assert adopted.submit(_backend, engine).result() == first
    keeper.close()


def test_a_block_inside_another_reads_on_a_connection_of_its_own(engine: Engine) -> None:
    keeper = KeptReads(engine)

    def nested() -> tuple[int, int, int]:
        with reading(engine) as outer:
            kept = int(outer.execute(PID).scalar_one())
            inner = _backend(engine)  # the kept one is lent: a pooled one
            again = int(outer.execute(PID).scalar_one())  # the outer still works
        return kept, inner, again

    with ThreadPoolExecutor(1, initializer=keeper.adopt) as adopted:
        kept, inner, again = adopted.submit(nested).result()
        assert inner != kept and again == kept
        assert adopted.submit(_backend, engine).result() == kept  # lent again afterwards
    keeper.close()


def test_a_kept_sqlite_connection_holds_no_snapshot_between_reads(tmp_path: Path) -> None:
    """On SQLite the database thread keeps its read connection too: each read ends its
    transaction, so a write committed in between is seen by the next read, and the WAL
    can be checkpointed to its end while the connection is kept (no reader pins it)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'kept.db'}")
    upgrade(engine)
    keeper = KeptReads(engine)

    def read() -> tuple[int, int]:
        with reading(engine) as connection:
            driver = connection.connection.dbapi_connection
            count = connection.execute(text("SELECT count(*) FROM attest_nonces")).scalar_one()
            return id(driver), int(count)

    try:
        with ThreadPoolExecutor(1, initializer=keeper.adopt) as adopted:
            first, count = adopted.submit(read).result()
            assert count == 0
            with engine.begin() as connection:
                connection.execute(
                    text("INSERT INTO attest_nonces (nonce, expires_at) VALUES (:n, 1)"),
                    {"n": b"\x01" * 32},
                )
            again, count = adopted.submit(read).result()
            assert (again, count) == (first, 1)  # kept, and it sees the write
            checkpoint = sqlite3.connect(tmp_path / "kept.db", isolation_level=None)
            busy, _, _ = checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            checkpoint.close()
            assert busy == 0  # no open read held the WAL back
    finally:
        keeper.close()
        engine.dispose()


def test_a_disposed_pool_is_not_read_from_again(engine: Engine) -> None:
    keeper = KeptReads(engine)
    with ThreadPoolExecutor(1, initializer=keeper.adopt) as adopted:
        first = adopted.submit(_backend, engine).result()
        engine.dispose()  # a new pool: the kept connection was the old one's
        second = adopted.submit(_backend, engine).result()
        assert second != first
        assert _checked_out(engine) == 1  # from the engine's pool now
    keeper.close()
    assert _checked_out(engine) == 0


def test_only_a_read_write_postgresql_engine_is_kept(database_url: str) -> None:
    engine = make_engine(database_url, execution_options={"postgresql_readonly": True})
    try:
        with pytest.raises(ValueError, match="read-write engine only"):
            KeptReads(engine)
    finally:
        engine.dispose()


def test_threads_started_during_a_shutdown_keep_connections_it_does_not_close(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    """``stop_database_threads`` closes the kept connections once the old threads have
    stopped; a request arriving meanwhile starts new threads, whose connections belong to
    a new keeper and stay open."""
    sms = Sms(SmsConfig(home=tmp_path, db_url=database_url, deployment_id="t"), engine=engine)
    handlers = SmsHandlers(sms, time.time)

    async def scenario() -> None:
        await handlers._existing([REF])  # the HEAD threads start, with the first keeper
        first, old_threads = handlers.reads, handlers.quick
        assert first is not None and old_threads is not None
        gate = threading.Event()
        old_threads.submit(gate.wait)  # the shutdown waits for this work to end
        stopping = asyncio.ensure_future(handlers.stop_database_threads())
        while handlers.quick is not None:
            await asyncio.sleep(0.01)
        await handlers._existing([REF])  # a request during the shutdown: new threads
        new_threads = handlers.quick
        assert new_threads is not None and handlers.reads is not first
        loop = asyncio.get_running_loop()
        before = await loop.run_in_executor(new_threads, _backend, engine)
        gate.set()
        await stopping  # the first keeper's connections are closed now
        # The new thread's kept connection is still open (asked from a connection of its
        # own: the next read may run on the pool's other thread, with its own connection).
        await asyncio.sleep(0.2)  # a closed connection's backend is gone well within this
        with engine.connect() as connection:
            alive = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": before}
            ).scalar_one()
        assert alive == 1
        await handlers.stop_database_threads()

    async def bounded() -> None:  # with one keeper for both, this hung: fail instead
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())
