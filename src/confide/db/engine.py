"""Engines and migrations."""

from __future__ import annotations

import select
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError

from confide.db.direct import direct_option
from confide.db.silence import STATEMENT_TIMEOUT_MS, SilenceWatch, libpq_timeouts
from confide.errors import ConfideError

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 5000  # an SQLite writer waits this long for the lock, then gives up (503)
_MIGRATION_LOCK = 0x6D6967726174  # "migrat"
MIGRATION_TIMEOUT = "10min"  # replicas starting together wait for the first's migration
_WATCHES: weakref.WeakKeyDictionary[Engine, SilenceWatch] = weakref.WeakKeyDictionary()


def connect_url(url: str) -> str:
    """``postgresql://…`` means psycopg 3; SQLite and full SQLAlchemy URLs pass through."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise ConfideError(f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql://")


def make_engine(
    url: str,
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    direct: bool | None = None,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    **options: Any,
) -> Engine:
    """An engine for ``url``; ``options`` go to :func:`sqlalchemy.create_engine`.

    ``busy_timeout_ms``: how long an SQLite writer waits for the write lock before the
    database counts as locked (the sms then answers 503; tests make it short).
    ``direct``: whether :class:`~confide.db.direct.DirectStatement` runs on the driver
    (True) or through ``Connection.execute`` (False); None: ``CONFIDE_DB_DIRECT``, read
    now. ``statement_timeout_ms``: PostgreSQL's ``statement_timeout`` (unless the URL
    sets it), which also bounds how long a silent server is waited for: see
    :mod:`confide.db.silence`, whose connect, keepalive and TCP timeouts are added too.
    On PostgreSQL, a pooled connection that the server or the network has closed (a
    database restart, a cut) is replaced at checkout instead of failing the request that
    draws it: see :func:`_closed_by_peer`.
    """
    target = connect_url(url)
    # A database error's message leaves out the statement's parameters: they may hold a
    # sealed value, a requester's address or a secret's name, and such errors are logged.
    options.setdefault("hide_parameters", True)
    options["execution_options"] = {
        **direct_option(direct),
        **options.get("execution_options", {}),
    }
    silence: float | None = None
    if target.startswith("postgresql"):
        timeouts, silence = libpq_timeouts(make_url(target), statement_timeout_ms)
        connect_args = options.setdefault("connect_args", {})
        for name, value in timeouts.items():
            connect_args.setdefault(name, value)
        # The hot statements are prepared by confide.db.direct, once per connection.
        # psycopg's own preparing (of a statement run five times) is turned off: with a
        # statement of its own prepared, psycopg deallocates every prepared statement of
        # the connection at each rollback, ours too. So a statement on a hot path belongs
        # in a DirectStatement: a Core statement is parsed and planned each time (well
        # under a millisecond; fine for sessions and tags, not for pushes or grants).
        options.setdefault("connect_args", {}).setdefault("prepare_threshold", None)
    engine = create_engine(target, future=True, **options)
    if engine.dialect.name == "postgresql" and not options.get("pool_pre_ping"):
        event.listen(engine, "checkout", _closed_by_peer)
    if engine.dialect.name == "postgresql" and silence is not None:
        _WATCHES[engine] = SilenceWatch(engine, silence)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))
        _WriterGate(busy_timeout_ms / 1000).attach(engine)
    return engine


class _WriterGate:
    """SQLite writers of one engine queue on a lock in this process, then ``BEGIN IMMEDIATE``.

    Every transaction starts here (pysqlite otherwise emits BEGIN lazily, which breaks
    SAVEPOINTs (a released savepoint commits) and lets two deferred writers deadlock on the
    lock upgrade; SQLAlchemy's documented pysqlite recipe). Reads opened with
    :func:`reading` begin DEFERRED and skip the gate: in WAL mode they never block on, or
    block, a writer.

    Why a lock in front of SQLite's own: a writer that finds the database locked sleeps in
    SQLite's busy handler (1, 2, 5, … up to 100 ms between tries), so threads of one
    process contending for it wait far longer than the transaction ahead of them takes,
    and not in turn. Here they wait on the lock and the next one goes as soon as the
    previous one has committed or rolled back. Other processes (a replica, the CLI) still
    meet SQLite's lock and its ``busy_timeout``. Waiting for the gate is bounded by the
    same timeout and then fails as a busy database does (an OperationalError
    ``SQLITE_BUSY``, answered 503).

    The gate is held from ``BEGIN IMMEDIATE`` to the end of that transaction, and released
    on every way a transaction ends: its COMMIT or ROLLBACK (sent here, straight to the
    driver, before the gate opens; pysqlite's own ``commit()``/``rollback()`` that
    SQLAlchemy calls next then have nothing to do), a failed BEGIN, and the pool's reset,
    check-in, invalidation or close of the connection (a connection error, a connection
    returned without ending its transaction).
    """

    def __init__(self, timeout: float) -> None:
        self._lock = threading.Lock()
        self._timeout = timeout
        self._holder: Any = None  # the driver connection whose transaction holds the gate

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)
        for name in ("reset", "checkin"):
            event.listen(engine, name, self._end_on_return)
        for name in ("invalidate", "close", "close_detached"):
            event.listen(engine, name, self._forget)

    def held_by(self, driver: Any) -> bool:
        return driver is not None and self._holder is driver

    def _begin(self, connection: Connection) -> None:
        read = connection.get_execution_options().get("confide_read")
        statement = "BEGIN DEFERRED" if read else "BEGIN IMMEDIATE"
        # Straight to the driver: through exec_driver_sql, SQLAlchemy's statement machinery
        # cost a tenth of a HEAD check's server time. Errors are wrapped as SQLAlchemy would
        # (a locked database stays an OperationalError, answered 503).
        driver: Any = connection.connection.dbapi_connection
        if not read:
            if not self._lock.acquire(timeout=self._timeout):
                busy = sqlite3.OperationalError("database is locked (queued writers)")
                busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
                busy.sqlite_errorname = "SQLITE_BUSY"
                raise DBAPIError.instance(statement, (), busy, sqlite3.Error)
            self._holder = driver
        try:
            driver.execute(statement).close()
        except BaseException as exc:
            self._release(driver)
            if isinstance(exc, sqlite3.Error):
                raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc
            raise

    def _commit(self, connection: Connection) -> None:
        self._end(connection, "COMMIT")

    def _rollback(self, connection: Connection) -> None:
        self._end(connection, "ROLLBACK")

    def _end(self, connection: Connection, statement: str) -> None:
        if connection.invalidated:  # the pool's invalidate event released the gate
            return
        driver: Any = connection.connection.dbapi_connection
        if not self.held_by(driver):
            return  # a read's transaction: pysqlite ends it as usual
        try:
            if _in_transaction(driver):
                driver.execute(statement).close()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc
        finally:
            # A COMMIT that failed may leave the transaction open (SQLite keeps it): the
            # gate then stays shut until the rollback that follows, at the latest when the
            # pool resets the connection.
            if statement == "ROLLBACK" or not _in_transaction(driver):
                self._release(driver)

    def _end_on_return(self, driver: Any, *rest: Any) -> None:
        """Back in the pool (reset, then check-in) still holding the gate: roll back."""
        del rest
        if self.held_by(driver):
            try:
                if _in_transaction(driver):
                    driver.execute("ROLLBACK").close()
            finally:
                self._release(driver)

    def _forget(self, driver: Any, *rest: Any) -> None:
        """The connection is being invalidated or closed: closing ends its transaction."""
        del rest
        self._release(driver)

    def _release(self, driver: Any) -> None:
        if self.held_by(driver):
            self._holder = None
            self._lock.release()


def _in_transaction(driver: Any) -> bool:
    try:
        return bool(driver.in_transaction)
    except sqlite3.Error:  # closed: nothing is open any more
        return False


def reading(engine: Engine) -> AbstractContextManager[Connection]:
    """A connection for reads only (on SQLite it does not take the write lock), for a
    ``with`` block.

    On PostgreSQL it runs in autocommit: no BEGIN and ROLLBACK round trips around a read
    (a third of a HEAD check's time there). At READ COMMITTED, the default, each statement
    takes its own snapshot inside a transaction as well, so a read sees nothing different.
    A read-only engine (``postgresql_readonly``) keeps its transactions: that is where
    PostgreSQL enforces the flag. On a thread that :class:`KeptReads` adopted, it is
    that thread's kept connection (a block inside another gets one from the pool).
    """
    keeper: KeptReads | None = getattr(_adopted, "keeper", None)
    if keeper is not None and keeper.engine is engine and not keeper.lent():
        return keeper.connection()
    return _read_connection(engine)


def _read_connection(engine: Engine) -> Connection:
    """A new connection of :func:`reading` (autocommit on a read-write PostgreSQL)."""
    connection = engine.connect()
    options = engine.get_execution_options()
    if engine.dialect.name == "postgresql" and not options.get("postgresql_readonly"):
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection.execution_options(confide_read=True)


_adopted = threading.local()  # .keeper: the KeptReads of this thread, if any


class KeptReads:
    """One read connection per thread, kept from one read to the next, for the threads a
    service runs its database work on (autocommit on PostgreSQL; on SQLite each read's
    DEFERRED transaction ends with its block, so no snapshot pins the WAL in between).

    Checking a connection out of the pool and back for every read, with its isolation
    level set and reset, cost about 80 µs of CPU per read on the reference VM, a sixth of
    a HEAD check that reads the database. A kept connection is checked before each use
    as the pool checks one at checkout (:func:`_closed_by_peer`: closed by its peer, it
    is replaced), and dropped when a statement found it disconnected. A thread joins by
    running :meth:`adopt` (a ``ThreadPoolExecutor`` initializer); :meth:`close` gives
    every kept connection back to the pool once those threads have stopped. A connection
    of a pool the engine has since replaced (``dispose``) is not used again.
    """

    def __init__(self, engine: Engine) -> None:
        if engine.get_execution_options().get("postgresql_readonly"):
            raise ValueError("reads are kept on a read-write engine only")
        self.engine = engine
        self._local = threading.local()  # .connection, .pool, .lent: this thread's
        self._kept: set[Connection] = set()
        self._lock = threading.Lock()

    def adopt(self) -> None:
        _adopted.keeper = self

    def lent(self) -> bool:
        """Whether this thread's connection is in a ``with`` block now."""
        return bool(getattr(self._local, "lent", False))

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None and (
            self._local.pool is not self.engine.pool or not _still_open(connection)
        ):
            self._drop(connection)
            connection = None
        if connection is None:
            connection = _read_connection(self.engine)
            self._local.connection, self._local.pool = connection, self.engine.pool
            with self._lock:
                self._kept.add(connection)
        self._local.lent = True
        try:
            yield connection
        finally:
            self._local.lent = False
            if connection.invalidated or connection.closed:
                self._drop(connection)
            elif connection.in_transaction():
                connection.rollback()  # PostgreSQL: nothing sent; SQLite: the read ends

    def close(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, set()
        for connection in kept:
            with suppress(Exception):  # closing: a connection already lost is fine
                connection.close()

    def _drop(self, connection: Connection) -> None:
        self._local.connection = None
        with self._lock:
            self._kept.discard(connection)
        with suppress(Exception):
            connection.close()


def _still_open(connection: Connection) -> bool:
    """Whether a kept connection may be used: not closed, not invalidated, and not closed
    by its peer (then invalidated here: the pool discards it)."""
    if connection.closed or connection.invalidated:
        return False
    if connection.dialect.name == "sqlite":  # a file: no peer to close it
        return True
    try:
        _closed_by_peer(connection.connection.dbapi_connection, None, None)
    except DisconnectionError:
        connection.invalidate()
        return False
    return True


def _closed_by_peer(driver: Any, record: Any, proxy: Any) -> None:
    """At checkout: a pooled PostgreSQL connection with something to read has been closed
    by its peer (end of file, or the server's "terminating connection" notice): an idle
    connection is sent nothing else. SQLAlchemy then replaces it (DisconnectionError).

    A zero-timeout ``poll()`` of the socket, instead of ``pool_pre_ping``'s round trip per
    checkout (a third of a HEAD check's server time). Like a ping, it cannot tell a
    silent black hole from a quiet server; the query then fails (503) and the client
    retries on a new connection.
    """
    del record, proxy
    try:
        fd = driver.fileno()
    except Exception as exc:  # closed on our side (psycopg raises OperationalError)
        raise DisconnectionError(str(exc)) from exc
    poller = select.poll()  # not select(): no limit on the descriptor's number
    poller.register(fd, select.POLLIN)
    if poller.poll(0):  # data, end of file, or an error (POLLHUP, POLLERR) to read
        raise DisconnectionError("the server or the network closed this pooled connection")


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
        watch = _WATCHES.get(engine)
        driver = connection.connection.dbapi_connection
        with watch.unwatched(driver) if watch is not None else nullcontext():
            if connection.dialect.name == "postgresql":  # replicas starting together queue here
                connection.execute(text(f"SET LOCAL statement_timeout = '{MIGRATION_TIMEOUT}'"))
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
