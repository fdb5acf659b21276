"""Signed writes that arrive together, committed together (a group commit).

A claim, a heartbeat or a status report is one short transaction, and its commit waits
for the disk (SQLite's WAL with ``synchronous=FULL``; PostgreSQL's WAL flush), longer
than the rest of the request on a busy disk. So the writes that wait at the same moment
share one transaction (:class:`~confide.sms.batching.Coalescer`, as the sms's grants
do): each runs in a savepoint of its own, so a refused one leaves nothing behind but its
nonce, used up in the same transaction, and the others go on; one COMMIT answers them
all. A database that fails (locked, unreachable, full) fails the whole batch, and each
request is answered 503 with its nonce unused, as ``Handlers.signed_request`` would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, text
from starlette.requests import Request

from confide.db.availability import unavailability
from confide.db.direct import DirectStatement
from confide.db.replay import record_request
from confide.errors import AuthError
from confide.hub.service import audit_mark, audit_undo
from confide.sms.batching import Coalescer
from confide.web.handlers import Handlers
from confide.web.signed import Signed, authenticate

T = TypeVar("T")
BATCH = 64  # writes in one transaction at most
# Savepoints sent as plain statements on the driver (confide.db.direct): SQLAlchemy's
# begin_nested compiled each one afresh, a fifth of the hub's time under load.
_SAVEPOINT = DirectStatement(text("SAVEPOINT hub_write"))
_RELEASE = DirectStatement(text("RELEASE SAVEPOINT hub_write"))
_ROLLBACK = DirectStatement(text("ROLLBACK TO SAVEPOINT hub_write"))


@contextlib.contextmanager
def _savepoint(connection: Connection) -> Iterator[None]:
    """The block in a savepoint: kept when it returns, undone when it raises."""
    _SAVEPOINT.execute(connection, {})
    try:
        yield
    except BaseException:
        if not connection.invalidated:
            _ROLLBACK.execute(connection, {})
            _RELEASE.execute(connection, {})
        raise
    _RELEASE.execute(connection, {})


class _Write(Generic[T]):
    """One signed request's work in a batch, and how it ended."""

    def __init__(self, signed: Signed, work: Callable[[Connection, Signed], T]) -> None:
        self.signed = signed
        self.work = work
        self.value: T | None = None
        self.error: Exception | None = None

    def run(self, connection: Connection) -> None:
        mark = audit_mark(connection)
        try:
            with _savepoint(connection):
                self.value = self.work(connection, self.signed)
            return
        except Exception as exc:
            audit_undo(connection, mark)  # its entries went with its savepoint
            if unavailability(exc) is not None:
                raise  # the database, not this request: the whole batch fails
            self.error = exc
        try:  # refused: the nonce is used up with the batch (a replay is answered 401)
            with _savepoint(connection):
                record_request(connection, self.signed.by, self.signed.now)
        except AuthError as replay:
            self.error = replay

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class GroupCommit:
    """The group commit of one service's signed writes (see the module's docstring)."""

    def __init__(
        self,
        handlers: Handlers,
        begin: Callable[[], AbstractContextManager[Connection]],
        limit: int = BATCH,
    ) -> None:
        self.h = handlers
        self.begin = begin  # how a batch's transaction begins and ends (Hub.begin)
        self._writes: Coalescer[_Write[Any], None] = Coalescer(self._commit, lanes=1, limit=limit)

    async def run(
        self, request: Request, body: bytes, work: Callable[[Connection, Signed], T]
    ) -> T:
        """``work(connection, signed)`` for the signed ``request`` (401 if it is not signed
        right), in the next batch; its value, or its refusal raised."""
        now = self.h.now()
        signed = Signed(authenticate(request, body, self.h.audience, now), self.h.engine, now)
        return await self.submit(signed, work)

    async def submit(self, signed: Signed, work: Callable[[Connection, Signed], T]) -> T:
        """:meth:`run` for a request already authenticated (``signed``)."""
        write = _Write(signed, work)
        await self._writes.get(write)
        return write.outcome()

    async def _commit(self, batch: list[_Write[Any]]) -> dict[_Write[Any], None]:
        await self.h.blocking(self._transaction, batch)
        return dict.fromkeys(batch)

    def _transaction(self, batch: list[_Write[Any]]) -> None:
        with self.begin() as connection:
            for write in batch:
                write.run(connection)
        for write in batch:
            write.signed.used = True
        self.h.maybe_prune()
