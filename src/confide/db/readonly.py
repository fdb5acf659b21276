"""Open a service's existing database to inspect it (``confide audit``).

Inspecting must change nothing: a database that does not exist is refused rather than
created (SQLite makes an empty file on connect otherwise), no migration runs, and the
connection is read-only: SQLite is opened with ``mode=ro``, PostgreSQL sessions are
``READ ONLY`` (SQLAlchemy's ``postgresql_readonly``). A schema on PostgreSQL is chosen in
the URL, as libpq does: ``?options=-csearch_path%3DSCHEMA``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from confide.db.availability import reason, unavailability
from confide.db.direct import direct_option
from confide.db.engine import BUSY_TIMEOUT_MS, connect_url, make_engine, reading
from confide.errors import ConfideError

AUDIT_STATEMENT_TIMEOUT_MS = 300_000


def open_readonly(url: str, shown: str, table: str) -> Engine:
    """An engine on the existing database at ``url`` that holds ``table``, read-only.

    ``shown`` is how messages name the database (the URL without its password). Refusals
    are :class:`ConfideError`: ``no sms database at …`` when there is none, ``cannot
    reach the database …`` when it is locked or unreachable.
    """
    target = make_url(connect_url(url))
    if target.get_backend_name() == "sqlite":
        engine = _sqlite_readonly(target.database, shown)
    else:
        # An audit reads the whole log in one statement: longer than a request's bound.
        engine = make_engine(
            url,
            execution_options={"postgresql_readonly": True},
            statement_timeout_ms=AUDIT_STATEMENT_TIMEOUT_MS,
        )
    try:
        with reading(engine) as connection:
            present = inspect(connection).has_table(table)
    except (DBAPIError, PoolTimeoutError) as exc:
        engine.dispose()
        raise database_error(exc, shown) from None
    if not present:
        engine.dispose()
        raise ConfideError(
            f"no sms database at {shown}: it has no {table} table (is this the database "
            f"`confide serve sms` uses? on PostgreSQL, is the schema in the URL?)"
        )
    return engine


def database_error(exc: BaseException, shown: str) -> ConfideError:
    """A failure of the database, as a refusal that names it and never a statement."""
    why = reason(exc)
    if unavailability(exc) is not None:
        if "does not exist" in why:  # PostgreSQL refuses a connection to a missing database
            return ConfideError(f"no sms database at {shown}: {why}")
        return ConfideError(f"cannot reach the database {shown}: {why}")
    return ConfideError(f"cannot read the database {shown}: {why}")


def _sqlite_readonly(database: str | None, shown: str) -> Engine:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ConfideError(f"no sms database at {shown}: give sqlite:///FILE")
    path = Path(database).resolve()
    if not path.is_file():
        raise ConfideError(f"no sms database at {path}")
    engine = create_engine(
        f"sqlite:///{path}",
        creator=_connect_readonly(path),
        execution_options=direct_option(),  # CONFIDE_DB_DIRECT, as make_engine reads it
    )
    # One transaction per connection use, so the chain is read from one snapshot.
    event.listen(engine, "begin", _begin)
    return engine


def _connect_readonly(path: Path) -> Callable[[], sqlite3.Connection]:
    uri = f"file:{quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return connection

    return connect


def _begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN DEFERRED")
