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

It takes plain statements only: named bind parameters with scalar values, column types
whose bind and result processing the dialect states (applied here), no ``IN`` lists
that expand. Anything else stays on ``Connection.execute``.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # bind parameter names, in the order a positional style needs
    positional: bool
    defaults: Mapping[str, Any]  # values the statement binds itself (a LIMIT)
    bind: Mapping[str, Processor]
    result: tuple[Processor | None, ...]  # one per result column
    row: Callable[..., tuple[Any, ...]]  # a named tuple: row.column


class DirectStatement:
    """``statement`` (a Core select, insert, delete or text), run on the driver.

    ``columns``: for an ``insert(table)`` without values, the columns the parameters
    give (as :meth:`Connection.execute` infers from the first parameter set).
    """

    def __init__(self, statement: ClauseElement, columns: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._columns = None if columns is None else list(columns)
        self._compiled: dict[tuple[str, str, str], _Compiled] = {}
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
        dialect = connection.dialect
        compiled = self._compiled.get(_key(dialect)) or self._compile(dialect)
        args = self._args(compiled, params)
        if not connection.in_transaction():
            connection.begin()  # as execute would: the engine's begin events run
        driver: Any = connection.connection.dbapi_connection
        cursor, kept = _cursor(connection, driver)
        try:
            cursor.execute(compiled.sql, args)
            # A statement with known columns returns rows: psycopg builds its description
            # anew each time it is read (a tenth of a statement's client time).
            rows = cursor.fetchall() if fetch and (compiled.result or cursor.description) else []
            count = cursor.rowcount
        except dialect.loaded_dbapi.Error as exc:
            if kept:
                _drop_cursor(connection)
            lost = dialect.is_disconnect(exc, driver, cursor)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                compiled.sql, args, exc, dialect.loaded_dbapi.Error,
                hide_parameters=connection.engine.hide_parameters,
                connection_invalidated=lost, dialect=dialect,
            ) from exc  # fmt: skip
        finally:
            if not kept:
                cursor.close()
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
            values = [{c: bindparam(f"{c}_{i}", type_=columns[c].type) for c in self._columns}
                      for i in range(count)]  # fmt: skip
            statement = DirectStatement(insert(self._table).values(values))
            with self._lock:
                statement = self._statements.setdefault(count, statement)
        return statement


_CURSOR = "confide_direct_cursor"  # in the pool record's info: (driver connection, cursor)


def _cursor(connection: Connection, driver: Any) -> tuple[Any, bool]:
    """A cursor for one statement, and whether it is kept for the next ones.

    On psycopg one cursor per driver connection is kept and used again (a new one costs a
    quarter of a statement's client time); a connection is used by one thread at a time,
    and each statement's rows are fetched before the next runs. The record's info outlives
    a reconnect, so the cursor is used only with the driver connection that made it.
    Elsewhere (SQLite) a cursor per statement, closed after it, as before: a kept sqlite3
    cursor could keep a read open.
    """
    if connection.dialect.driver != "psycopg":
        return driver.cursor(), False
    info = connection.info
    kept = info.get(_CURSOR)
    if kept is not None and kept[0] is driver and not kept[1].closed:
        return kept[1], True
    cursor = driver.cursor()
    info[_CURSOR] = (driver, cursor)
    return cursor, True


def _drop_cursor(connection: Connection) -> None:
    kept = connection.info.pop(_CURSOR, None)
    if kept is not None:
        kept[1].close()


def _key(dialect: Dialect) -> tuple[str, str, str]:
    """What the compiled form depends on: the SQL dialect, the driver, its parameter style."""
    return dialect.name, dialect.driver, dialect.paramstyle
