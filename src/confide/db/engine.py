"""Engines and migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError

from confide.errors import ConfideError

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 5000  # an SQLite writer waits this long for the lock, then gives up (503)
_MIGRATION_LOCK = 0x6D6967726174  # "migrat"


def connect_url(url: str) -> str:
    """``postgresql://…`` means psycopg 3; SQLite and full SQLAlchemy URLs pass through."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise ConfideError(f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql://")


def make_engine(url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, **options: Any) -> Engine:
    """An engine for ``url``; ``options`` go to :func:`sqlalchemy.create_engine`.

    ``busy_timeout_ms``: how long an SQLite writer waits for the write lock before the
    database counts as locked (the sms then answers 503; tests make it short).
    On PostgreSQL, a pooled connection is pinged at checkout (``pool_pre_ping``), so one
    that died with a database restart or a cut network is replaced instead of failing the
    request that draws it; it costs one round trip per checkout (pass False to skip it).
    """
    target = connect_url(url)
    if target.startswith("postgresql"):
        options.setdefault("pool_pre_ping", True)
    engine = create_engine(target, future=True, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(connection: Any) -> None:
    """Start every transaction ourselves: writers take the write lock at once.

    pysqlite otherwise emits BEGIN lazily, which breaks SAVEPOINTs (a released savepoint
    commits) and lets two deferred writers deadlock on the lock upgrade; IMMEDIATE makes
    writers queue on busy_timeout instead (SQLAlchemy's documented pysqlite recipe).
    Reads opened with :func:`reading` begin DEFERRED: in WAL mode they never block on,
    or block, a writer.
    """
    mode = "DEFERRED" if connection.get_execution_options().get("confide_read") else "IMMEDIATE"
    statement = f"BEGIN {mode}"
    # Straight to the driver: through exec_driver_sql, SQLAlchemy's statement machinery
    # cost a tenth of a HEAD check's server time. Errors are wrapped as SQLAlchemy would
    # (a locked database stays an OperationalError, answered 503).
    driver = connection.connection.dbapi_connection
    try:
        driver.execute(statement).close()
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc


def reading(engine: Engine) -> Connection:
    """A connection for reads only (on SQLite it does not take the write lock).

    On PostgreSQL it runs in autocommit: no BEGIN and ROLLBACK round trips around a read
    (a third of a HEAD check's time there). At READ COMMITTED, the default, each statement
    takes its own snapshot inside a transaction as well, so a read sees nothing different.
    A read-only engine (``postgresql_readonly``) keeps its transactions: that is where
    PostgreSQL enforces the flag.
    """
    connection = engine.connect()
    options = engine.get_execution_options()
    if engine.dialect.name == "postgresql" and not options.get("postgresql_readonly"):
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection.execution_options(confide_read=True)


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    timeout = int(busy_timeout_ms)

    def on_connect(connection: Any, record: Any) -> None:
        del record
        connection.isolation_level = None  # pysqlite must not manage transactions (see below)
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={timeout}")
        cursor.close()

    return on_connect


def upgrade(engine: Engine) -> None:
    """Apply every pending migration (idempotent; safe on every start)."""
    from alembic import command  # noqa: PLC0415 (only services that start need alembic)
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # replicas starting together queue here
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
