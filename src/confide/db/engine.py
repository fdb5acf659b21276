"""Engines and migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text

from confide.errors import ConfideError

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x6D6967726174  # "migrat"


def connect_url(url: str) -> str:
    """``postgresql://…`` means psycopg 3; SQLite and full SQLAlchemy URLs pass through."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise ConfideError(f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql://")


def make_engine(url: str, **options: Any) -> Engine:
    engine = create_engine(connect_url(url), future=True, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
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
    connection.exec_driver_sql(f"BEGIN {mode}")


def reading(engine: Engine) -> Connection:
    """A connection for reads only (on SQLite it does not take the write lock)."""
    return engine.connect().execution_options(confide_read=True)


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    del record
    connection.isolation_level = None  # pysqlite must not manage transactions (see below)
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def upgrade(engine: Engine) -> None:
    """Apply every pending migration (idempotent; safe on every start)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # replicas starting together queue here
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
