"""Tell a database that is unavailable for now (locked, timed out, unreachable) from a refusal.

Such a failure is transient and leaves nothing behind: every write is one transaction,
rolled back when it fails, so the sms answers 503 with ``Retry-After`` and clients retry
(re-signed). An integrity error is a conflict (409), anything else a bug (500).

Only the error's class and code are looked at, never its message beyond that, and
:func:`cause` names them for a log line: SQLAlchemy's own message carries the statement
and its parameters.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

UNAVAILABLE_DETAIL = "the database is unavailable (locked or unreachable): retry"

_SQLITE_LOCKED = ("SQLITE_BUSY", "SQLITE_LOCKED")
_SQLITE_UNREACHABLE = ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PROTOCOL")
# PostgreSQL: lock_not_available, deadlock_detected, serialization_failure; query_canceled
# (statement_timeout); classes 08 connection exception, 53 insufficient resources (too
# many connections), 57 operator intervention (shutdown, cannot connect now).
_PG_LOCKED = ("55P03", "40P01", "40001")
_PG_TIMEOUT = ("57014",)
_PG_FULL = ("53100",)  # disk_full
_PG_UNREACHABLE_CLASSES = ("08", "53", "57")


def unavailability(exc: BaseException | None) -> str | None:
    """``"locked"``, ``"timeout"``, ``"full"`` (its disk) or ``"unreachable"`` when ``exc``
    means the database is unavailable for now; None for anything else (an integrity error,
    a bug)."""
    if isinstance(exc, PoolTimeoutError):
        return "timeout"  # every pooled connection stayed busy for the pool's whole timeout
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "unreachable"  # SQLAlchemy saw the connection die
    if not isinstance(exc, OperationalError):
        return None
    driver = exc.orig
    name = getattr(driver, "sqlite_errorname", None)  # sqlite3 names its (extended) code
    if isinstance(name, str):
        return _sqlite(name)
    return _postgres(getattr(driver, "sqlstate", None)) if hasattr(driver, "sqlstate") else None


def _sqlite(name: str) -> str | None:
    if name.startswith(_SQLITE_LOCKED):
        return "locked"
    if name.startswith("SQLITE_FULL"):
        return "full"
    return "unreachable" if name.startswith(_SQLITE_UNREACHABLE) else None


def _postgres(state: str | None) -> str | None:
    if state is None:  # the connection failed, or was lost, before the server answered
        return "unreachable"
    if state in _PG_LOCKED:
        return "locked"
    if state in _PG_TIMEOUT:
        return "timeout"
    if state in _PG_FULL:
        return "full"
    return "unreachable" if state[:2] in _PG_UNREACHABLE_CLASSES else None


def cause(exc: BaseException) -> str:
    """The driver's error class and code, for a log line (no message: no SQL, no values)."""
    driver = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(driver, "sqlite_errorname", None) or getattr(driver, "sqlstate", None)
    return f"{type(driver).__name__}{f' {code}' if code else ''}"


def reason(exc: BaseException) -> str:
    """The first line of the driver's message, for an operator at the command line.

    Only for failures to connect (where the driver names the host, port or file, never a
    statement): use :func:`cause` for anything said about a request.
    """
    driver = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(driver).strip().splitlines()
    return lines[0].strip() if lines else type(driver).__name__
