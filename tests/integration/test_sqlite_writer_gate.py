"""SQLite writers of one engine queue on an in-process gate before ``BEGIN IMMEDIATE``;
every way a transaction ends opens it again, and waiting too long is a busy database."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

from confide.db import make_engine, reading, upgrade
from confide.db.availability import unavailability
from confide.db.schema import attest_nonces

BUSY_MS = 300  # the engine's busy timeout, and so how long a writer waits for the gate


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "gate.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=BUSY_MS)
    upgrade(engine)
    yield engine, path
    engine.dispose()


def _row() -> dict[str, object]:
    return {"nonce": os.urandom(32), "expires_at": 1}


def _rows(engine: Engine) -> int:
    with reading(engine) as connection:
        return int(connection.execute(select(func.count()).select_from(attest_nonces)).scalar_one())


def _write_soon(engine: Engine) -> float:
    """Commit one row from another thread; how long it took (the gate must be open)."""
    took: list[float] = []
    errors: list[BaseException] = []

    def write() -> None:
        started = time.monotonic()
        try:
            with engine.begin() as connection:
                connection.execute(insert(attest_nonces), _row())
        except BaseException as exc:
            errors.append(exc)
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(10)
    assert not errors, errors
    assert took[0] < BUSY_MS / 1000, took  # did not wait out a shut gate
    return took[0]


def test_an_exception_in_the_transaction_opens_the_gate(db: tuple[Engine, Path]) -> None:
    engine, _ = db

    def fail() -> None:
        with engine.begin() as connection:
            connection.execute(insert(attest_nonces), _row())
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError):
        fail()
    _write_soon(engine)
    assert _rows(engine) == 1  # the failed one was rolled back


def test_a_failed_statement_opens_the_gate(db: tuple[Engine, Path]) -> None:
    engine, _ = db
    row = _row()
    with engine.begin() as connection:
        connection.execute(insert(attest_nonces), row)
    with pytest.raises(DBAPIError), engine.begin() as connection:
        connection.execute(insert(attest_nonces), row)  # a duplicate key
    _write_soon(engine)
    assert _rows(engine) == 2


def test_a_connection_returned_mid_transaction_opens_the_gate(db: tuple[Engine, Path]) -> None:
    engine, _ = db
    connection = engine.connect()
    connection.execute(insert(attest_nonces), _row())  # begins (and takes the gate)
    connection.close()  # never committed: the pool rolls it back
    _write_soon(engine)
    assert _rows(engine) == 1


def test_an_invalidated_connection_opens_the_gate(db: tuple[Engine, Path]) -> None:
    engine, _ = db

    def lose_the_connection() -> None:
        with engine.begin() as connection:
            connection.execute(insert(attest_nonces), _row())
            connection.invalidate()  # as on a lost connection: closed, not rolled back
            connection.execute(insert(attest_nonces), _row())

    with pytest.raises(PendingRollbackError):
        lose_the_connection()
    _write_soon(engine)
    assert _rows(engine) == 1


def test_a_locked_database_is_busy_and_opens_the_gate(db: tuple[Engine, Path]) -> None:
    """Another process holds SQLite's lock: BEGIN IMMEDIATE waits the busy timeout and
    fails as a locked database (503), and the gate it held is open again."""
    engine, path = db
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OperationalError) as raised, engine.begin() as connection:
            connection.execute(insert(attest_nonces), _row())
        assert unavailability(raised.value) == "locked"
    finally:
        other.execute("ROLLBACK")
        other.close()
    _write_soon(engine)


def test_waiting_too_long_at_the_gate_is_a_busy_database(db: tuple[Engine, Path]) -> None:
    engine, _ = db
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.begin() as connection:
            connection.execute(insert(attest_nonces), _row())
            holding.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        assert _rows(engine) == 0  # reads do not queue at the gate (nor see the write)
        started = time.monotonic()
        with pytest.raises(OperationalError) as raised, engine.begin() as connection:
            connection.execute(insert(attest_nonces), _row())
        assert time.monotonic() - started < 5 * BUSY_MS / 1000
        assert unavailability(raised.value) == "locked"
        assert "SQLITE_BUSY" in str(getattr(raised.value.orig, "sqlite_errorname", ""))
    finally:
        done.set()
        holder.join(10)
    _write_soon(engine)


def test_writers_take_turns(db: tuple[Engine, Path]) -> None:
    """Writers of one engine queue on the gate, none refused while the one ahead holds
    the lock for less than the busy timeout each time."""
    engine, _ = db
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(10):
                with engine.begin() as connection:
                    connection.execute(insert(attest_nonces), _row())
                    time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert _rows(engine) == 60
    _write_soon(engine)
