"""Hot statements run on the driver's cursor, inside SQLAlchemy's transaction.

An attestation runs about fifteen statements. Through :meth:`Connection.execute`, each
costs some 45 µs of SQLAlchemy's machinery (cache key, execution context, result
object) on top of what the driver needs (3 µs on SQLite, 36 µs on PostgreSQL): at
the sms's target rate that machinery alone would take most of a core. A
:class:`DirectStatement` is a Core statement compiled once per dialect by SQLAlchemy's
own compiler (so the SQL, casts and parameter style are the dialect's), then run with
``cursor.execute`` on the connection's driver connection: the transaction stays
SQLAlchemy's (begun, committed and rolled back by it, with the engine's events), and a
driver error is raised as the :class:`DBAPIError` subclass SQLAlchemy would raise
(IntegrityError, OperationalError), invalidating the connection on a disconnect. (Only
that connection: Core also marks every older pooled connection stale. Here the others
are found at checkout, by :func:`confide.db.engine._closed_by_peer`, when their peer
closed them; one cut without a FIN costs each of them a failed request, answered 503
and retried by the client.)

On psycopg a statement goes one level lower, to libpq (psycopg's ``pq`` module, with
its ``Transformer`` to adapt the values both ways, as its cursor does): a cursor's
execute spent some 70 µs of Python per statement in generators and waits around a round
trip that libpq makes in 20, with the GIL released while it waits. Each statement is
prepared once per connection (as psycopg's cursor does after five uses), under a name
made from its SQL and parameter types, and the transaction is begun the way psycopg
would, so commit and rollback stay psycopg's. psycopg's own preparing is off on such a
connection: it deallocates every prepared statement at each rollback.

It takes plain statements only: named bind parameters with scalar values, column types
whose bind and result processing the dialect states (applied here), no ``IN`` lists
that expand. Anything else stays on ``Connection.execute``.

The fence. This module is the only one that touches those private parts (SQLAlchemy's
compiled ``binds``, ``positiontup`` and ``construct_params``; psycopg's ``pq``,
``Transformer`` and ``pgconn``), and pyproject.toml bounds both libraries above for it.
Every statement a :class:`DirectStatement` holds can also run through SQLAlchemy's
public :meth:`Connection.execute`, with the same rows, counts and errors: an engine made
with ``direct=False`` (:func:`confide.db.engine.make_engine`), or with
``CONFIDE_DB_DIRECT=0`` in the environment when it is made, does so. The CI runs the
database tests both ways, so after an upgrade that breaks the private path the fallback
is a tested one (slower, as measured above; never different).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Table, bindparam, insert
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, visitors

Processor = Callable[[Any], Any]

DIRECT_OPTION = "confide_direct"  # the engine's execution option: False runs Core's execute
_PRESERVE = {"preserve_rowcount": True}
DIRECT_ENV = "CONFIDE_DB_DIRECT"  # "0": every engine made after runs Core's execute


def direct_option(direct: bool | None = None) -> dict[str, bool]:
    """The execution option that says which way an engine's DirectStatements run.

    ``direct``: True or False; None reads ``CONFIDE_DB_DIRECT`` (``0`` or ``false``: the
    public path), once, here. An engine without the option runs the direct path.
    """
    if direct is None:
        direct = os.environ.get(DIRECT_ENV, "1").strip().lower() not in ("0", "false", "no")
    return {DIRECT_OPTION: direct}


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # bind parameter names, in the order a positional style needs
    positional: bool
    defaults: Mapping[str, Any]  # values the statement binds itself (a LIMIT)
    bind: Mapping[str, Processor]
    result: tuple[Processor | None, ...]  # one per result column
    row: Callable[..., tuple[Any, ...]]  # a named tuple: row.column
    libpq: _LibpqForm | None  # on psycopg: the SQL with $1, $2, … and their names


@dataclass(frozen=True)
class _LibpqForm:
    sql: bytes
    names: tuple[str, ...]  # the parameter of $1, $2, …


class DirectStatement:
    """``statement`` (a Core select, insert, delete or text), run on the driver.

    ``columns``: for an ``insert(table)`` without values, the columns the parameters
    give (as :meth:`Connection.execute` infers from the first parameter set).
    """

    def __init__(self, statement: ClauseElement, columns: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._columns = None if columns is None else list(columns)
        self._compiled: dict[tuple[str, str, str], _Compiled] = {}
        self._required_names: frozenset[str] | None = None
        self._lock = threading.Lock()

    def first(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """The first row (a named tuple), or None."""
        rows = self._run(connection, params, fetch=True)[0]
        return rows[0] if rows else None

    def all(self, connection: Connection, params: Mapping[str, Any]) -> list[Any]:
        return self._run(connection, params, fetch=True)[0]

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> int:
        """Run it for its effect; the driver's row count."""
        return self._run(connection, params, fetch=False)[1]

    def _args(self, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = {**compiled.defaults, **params}
        for name, process in compiled.bind.items():
            values[name] = process(values[name])
        return (
            tuple(values[name] for name in compiled.names)
            if compiled.positional
            else {name: values[name] for name in compiled.names}
        )

    def _run(
        self, connection: Connection, params: Mapping[str, Any], *, fetch: bool
    ) -> tuple[list[Any], int]:
        if not connection.get_execution_options().get(DIRECT_OPTION, True):
            return self._run_core(connection, params, fetch=fetch)
        dialect = connection.dialect
        compiled = self._compiled.get(_key(dialect)) or self._compile(dialect)
        args = self._args(compiled, params)
        driver: Any = connection.connection.dbapi_connection
        state = None if compiled.libpq is None else _libpq_state(connection, driver)
        # As execute would, a transaction is begun (and the engine's begin events run),
        # but not for libpq in autocommit: it would begin nothing, and cost a rollback.
        if not connection.in_transaction() and not (state is not None and driver.autocommit):
            connection.begin()
        try:
            if compiled.libpq is not None and state is not None and state.ready():
                rows, count = state.run(compiled.libpq, args)
            else:
                rows, count = _run_cursor(driver, compiled, args, fetch)
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, driver, None)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                compiled.sql,
                args,
                exc,
                dialect.loaded_dbapi.Error,
                hide_parameters=connection.engine.hide_parameters,
                connection_invalidated=lost,
                dialect=dialect,
            ) from exc
        if rows and compiled.result:
            make, processors = compiled.row, compiled.result
            if any(processors):
                rows = [
                    make(*(v if p is None else p(v) for p, v in zip(processors, r, strict=True)))
                    for r in rows
                ]
            else:
                rows = [make(*r) for r in rows]
        return rows, count

    def _run_core(
        self, connection: Connection, params: Mapping[str, Any], *, fetch: bool
    ) -> tuple[list[Any], int]:
        """The fallback: the same statement through :meth:`Connection.execute` (rows as
        SQLAlchemy's, which are named tuples too). A missing parameter is a KeyError, as on
        the direct path, and not Core's default of NULL for an insert's absent column."""
        missing = self._required() - params.keys()
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        statement: Any = self._statement  # a select, insert, delete or text: Executable
        # preserve_rowcount: an INSERT's count too, as the driver's cursor gives it.
        result = connection.execute(statement, dict(params), execution_options=_PRESERVE)
        count = result.rowcount
        rows: list[Any] = list(result.all()) if fetch and result.returns_rows else []
        result.close()
        return rows, count

    def _required(self) -> frozenset[str]:
        """The parameters the caller must give: the statement's bind parameters without a
        value of their own, and an insert's columns (public API only: no compiling)."""
        if self._required_names is None:
            names = {
                b.key
                for b in visitors.iterate(self._statement)
                if isinstance(b, BindParameter) and b.required
            }
            self._required_names = frozenset(names | set(self._columns or ()))
        return self._required_names

    def _compile(self, dialect: Dialect) -> _Compiled:
        with self._lock:
            if _key(dialect) in self._compiled:
                return self._compiled[_key(dialect)]
            # An SQLCompiler: its binds, positiontup and construct_params are what
            # SQLAlchemy's own execution reads (the last with _check=False: defaults only).
            compiled: Any = self._statement.compile(dialect=dialect, column_keys=self._columns)
            binds = compiled.binds
            defaults = compiled.construct_params(_check=False)
            if any(b.expanding for b in binds.values()):
                raise TypeError("a DirectStatement takes no expanding IN parameters")
            names = tuple(compiled.positiontup or defaults)
            bind: dict[str, Processor] = {}
            for name, parameter in binds.items():
                process = parameter.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None and name in defaults:
                    bind[name] = process
            exported = getattr(self._statement, "exported_columns", ())
            keys = [c.key or f"column_{i}" for i, c in enumerate(exported)]
            result = tuple(
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in exported
            )
            entry = _Compiled(
                libpq=_libpq_form(compiled.string) if dialect.driver == "psycopg" else None,
                sql=compiled.string,
                names=names,
                positional=compiled.positional,
                # Values the statement binds itself; a parameter with none (a column of an
                # insert, a bindparam without a value) must come from the caller.
                defaults={
                    k: v
                    for k, v in defaults.items()
                    if v is not None and not (k in binds and binds[k].required)
                },
                bind=bind,
                result=result,
                row=namedtuple("Row", keys, rename=True),
            )
            self._compiled[_key(dialect)] = entry
            return entry


INSERT_ROWS = 32  # rows one multi-row INSERT takes at most


class InsertRows:
    """Rows of one table inserted together: one multi-row ``INSERT … VALUES (…), (…)``
    per INSERT_ROWS of them, a :class:`DirectStatement` per row count. One statement, not
    one per row (nor psycopg's pipelined ``executemany``, whose pipeline's entry, sync and
    exit took more of the server's Python time in a profile than the rows' statement)."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self._table = table
        self._columns = tuple(columns)
        self._statements: dict[int, DirectStatement] = {}
        self._lock = threading.Lock()

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            params = {f"{c}_{i}": row[c] for i, row in enumerate(chunk) for c in self._columns}
            self._statement(len(chunk)).execute(connection, params)

    def _statement(self, count: int) -> DirectStatement:
        statement = self._statements.get(count)
        if statement is None:
            columns = self._table.c
            values = [
                {c: bindparam(f"{c}_{i}", type_=columns[c].type) for c in self._columns}
                for i in range(count)
            ]
            statement = DirectStatement(insert(self._table).values(values))
            with self._lock:
                statement = self._statements.setdefault(count, statement)
        return statement


def _run_cursor(driver: Any, compiled: _Compiled, args: Any, fetch: bool) -> tuple[list[Any], int]:
    """The statement on a cursor of its own (SQLite; a psycopg transaction with options)."""
    cursor = driver.cursor()
    try:
        cursor.execute(compiled.sql, args)
        rows = cursor.fetchall() if fetch and (compiled.result or cursor.description) else []
        return rows, cursor.rowcount
    finally:
        cursor.close()


_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s|%%")


def _libpq_form(sql: str) -> _LibpqForm:
    """psycopg's ``%(name)s`` placeholders as libpq's ``$1``, ``$2``, … (a name used twice
    is one parameter) and ``%%`` as ``%``, as psycopg converts them."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _LibpqForm(_PLACEHOLDER.sub(number, sql).encode(), tuple(names))


_LIBPQ = "confide_libpq"  # in the pool record's info: the _LibpqState of its connection
# Statements prepared per connection at most (each shape of statement, row count and
# parameter types is one); past that, the statements first seen later run unnamed
# (parsed and planned each time: as correct, slower). Nothing is evicted.
PREPARED_MAX = 256


class _LibpqState:
    """What one psycopg connection keeps for the statements sent to its libpq: a
    Transformer (its adapters, looked up once) and the statements prepared on it."""

    def __init__(self, driver: Any) -> None:
        from psycopg import errors, pq  # noqa: PLC0415 - not imported by SQLite's users
        from psycopg.adapt import PyFormat, Transformer  # noqa: PLC0415

        self.driver = driver
        self.pgconn = driver.pgconn
        # psycopg's own preparing deallocates every statement of the connection at each
        # rollback, ours too: off here as well, whatever engine made the connection.
        driver.prepare_threshold = None
        self.transformer = Transformer(driver)
        self.prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._stale: set[bytes] = set()  # names whose plan no longer fits the schema
        self._errors = errors
        self._idle = pq.TransactionStatus.IDLE
        self._auto = PyFormat.AUTO
        self._rows = pq.ExecStatus.TUPLES_OK
        self._failed = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE)

    def ready(self) -> bool:
        """Whether a statement can go to libpq: in autocommit, or in a transaction under
        way or that a plain ``BEGIN`` starts (psycopg starts it so when the connection has
        no isolation level, read-only or deferrable option; otherwise its cursor does)."""
        driver = self.driver
        if driver.autocommit or self.pgconn.transaction_status != self._idle:
            return True
        return (driver.isolation_level, driver.read_only, driver.deferrable) == (None,) * 3

    def run(self, form: _LibpqForm, args: Mapping[str, Any]) -> tuple[list[Any], int]:
        """The statement through libpq: the transaction begun as psycopg would, the values
        adapted by psycopg's Transformer, the statement prepared on its first use here."""
        pgconn = self.pgconn
        if not self.driver.autocommit and pgconn.transaction_status == self._idle:
            self._check(pgconn.exec_(b"BEGIN"))
        transformer = self.transformer
        values = [args[name] for name in form.names]
        dumped = transformer.dump_sequence(values, [self._auto] * len(values))
        types = tuple(transformer.types or ())
        key = (form.sql, types)
        name = self.prepared.get(key)
        if name is None and len(self.prepared) < PREPARED_MAX:
            name = _statement_name(form.sql, types)
            if name in self._stale:
                self._check(pgconn.exec_(b"DEALLOCATE " + name))
                self._stale.discard(name)
            self._check(pgconn.prepare(name, form.sql, types))
            self.prepared[key] = name
        if name is None:
            result = pgconn.exec_params(form.sql, dumped, types, transformer.formats)
        else:
            result = pgconn.exec_prepared(name, dumped, transformer.formats)
        self._check(result, key)
        if result.status != self._rows:
            count = result.command_tuples
            return [], -1 if count is None else count
        transformer.set_pgresult(result)
        rows: list[Any] = transformer.load_rows(0, result.ntuples, tuple)
        transformer.set_pgresult(None)  # the result's memory is not kept until the next
        return rows, len(rows)

    def _check(self, result: Any, key: tuple[bytes, tuple[int, ...]] | None = None) -> None:
        """psycopg's error for a result that failed (as its cursor raises it). A prepared
        statement that is gone (deallocated behind our back: a DEALLOCATE, a DISCARD ALL)
        or whose plan no longer fits the schema (a column's type changed by a migration
        while the sms ran) fails this once; the next use prepares it again."""
        if result.status in self._failed:
            error = self._errors.error_from_result(result, encoding=self.driver.info.encoding)
            if key is not None and key in self.prepared:
                if isinstance(error, self._errors.InvalidSqlStatementName):
                    del self.prepared[key]  # gone from the server: prepared again next
                elif isinstance(error, self._errors.FeatureNotSupported):
                    # Still on the server: deallocated before it is prepared again (not
                    # now: a failed transaction runs nothing until its rollback).
                    self._stale.add(self.prepared.pop(key))
            raise error


def _statement_name(sql: bytes, types: tuple[int, ...]) -> bytes:
    """A prepared statement's name, from what it is: the same name is the same statement
    (a name that exists already, found again after its entry was dropped, is this very
    statement, never another's)."""
    digest = hashlib.sha256(sql + b"\0" + ",".join(map(str, types)).encode()).hexdigest()
    return b"confide_" + digest[:24].encode()


def _libpq_state(connection: Connection, driver: Any) -> _LibpqState:
    """The record's info outlives a reconnect: the state is used only with its driver
    connection (a new one gets a new state: nothing is prepared on it yet)."""
    state: _LibpqState | None = connection.info.get(_LIBPQ)
    if state is None or state.driver is not driver:
        state = connection.info[_LIBPQ] = _LibpqState(driver)
    return state


def _key(dialect: Dialect) -> tuple[str, str, str]:
    """What the compiled form depends on: the SQL dialect, the driver, its parameter style."""
    return dialect.name, dialect.driver, dialect.paramstyle
