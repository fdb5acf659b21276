"""The base of a service's route handlers: database threads, signed requests, pruning.

A service (the sms; the hub and storage next) subclasses :class:`Handlers` with its
engine, its audience and a clock, and handles every signed request inside
:meth:`Handlers.signed_request`: the nonce is used up on every refusal, whichever
exception it is, so a forgotten call cannot leave a refused request replayable. The one
exception is a database that is unavailable: it could not take that write either, and
the client retries with a fresh signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets as secrets_module
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.requests import Request

from confide.db.availability import unavailability
from confide.db.engine import KeptReads
from confide.db.replay import prune_request_nonces
from confide.web.problems import HttpProblemError
from confide.web.signed import Signed, authenticate

Clock = Callable[[], float]
P = ParamSpec("P")
T = TypeVar("T")
POSTGRESQL_THREADS = 3  # requests a PostgreSQL service works on at once
PARSING_THREADS = 1  # for CPU-bound parsing of request documents, off the database threads
# Documents parsed or waiting at once; beyond, 503 at once: wallets cost nothing, and an
# unbounded queue let 60 large documents delay another wallet's session write by 8 s.
PARSE_QUEUE = 16


class Handlers:
    """Routes' shared machinery over one engine, the audience signed requests must name,
    and a clock."""

    def __init__(self, engine: Engine, audience: str, clock: Clock, name: str) -> None:
        self.name = name  # the service's, in its threads' names
        self.engine = engine
        self.audience = audience
        self.clock = clock
        # Database work runs on these threads, never on the event loop. SQLite gets one:
        # it has one writer anyway, and more threads only queue on its lock and on the
        # GIL. PostgreSQL gets a few, so that one request's round trips overlap another's
        # work (docs/benchmarks.md, "sms: threads").
        self.threads = 1 if engine.dialect.name == "sqlite" else POSTGRESQL_THREADS
        self.database: ThreadPoolExecutor | None = None  # made on first use (event loop)
        self.parsing: ThreadPoolExecutor | None = None
        self.parsing_load = 0  # documents on or waiting for the parsing thread
        # Each database thread keeps its read connection (docs/benchmarks.md, "sms: kept
        # reads and remembered facts").
        self.reads = KeptReads(engine)

    def now(self) -> int:
        return int(self.clock())

    async def blocking(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args, **kwargs)`` on the database threads (what touches the database
        blocks: it must not stall the event loop, nor other requests)."""
        if self.database is None:
            self.database = self.executor(self.threads, f"{self.name}-db")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.database, functools.partial(work, *args, **kwargs))

    async def parse(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args, **kwargs)`` on a parsing thread: a document's parse never holds a
        database thread (on SQLite the only one) nor the event loop."""
        if self.parsing is None:
            self.parsing = ThreadPoolExecutor(
                PARSING_THREADS, thread_name_prefix=f"{self.name}-parse"
            )
        if self.parsing_load >= PARSE_QUEUE:
            raise HttpProblemError(
                503,
                "Service Unavailable",
                f"{PARSE_QUEUE} documents are already waiting to be parsed: retry shortly",
            )
        self.parsing_load += 1  # on the event loop only: no lock needed
        try:
            loop = asyncio.get_running_loop()
            partial = functools.partial(work, *args, **kwargs)
            return await loop.run_in_executor(self.parsing, partial)
        finally:
            self.parsing_load -= 1

    def executor(self, threads: int, name: str) -> ThreadPoolExecutor:
        """Threads for database work, each keeping its read connection."""
        adopt = None if self.reads is None else self.reads.adopt
        return ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=adopt)

    def executors(self) -> list[ThreadPoolExecutor | None]:
        """Take every executor made so far, for shutdown (a subclass adds its own)."""
        taken = [self.database, self.parsing]
        self.database = self.parsing = None
        return taken

    async def stop_database_threads(self) -> None:
        """At shutdown: let the work under way finish (off the event loop), then close the
        threads' kept read connections. A later request (the app started again) gets new
        threads, with a keeper of their own: none of them can be handed a connection
        that this shutdown closes."""
        executors = self.executors()
        reads = self.reads
        if reads is not None:
            self.reads = KeptReads(self.engine)
        for executor in executors:
            if executor is not None:
                await asyncio.to_thread(executor.shutdown)
        if reads is not None:
            reads.close()

    @contextlib.contextmanager
    def signed_request(
        self, request: Request, body: bytes, *, body_sha256: str | None = None
    ) -> Iterator[Signed]:
        """Verify ``request`` (401 if it is not signed right), then run the block with
        its :class:`Signed`; whatever the block raises, except a database that is
        unavailable, uses the nonce up when the block had not. A refused request whose
        nonce an earlier request used is a replay, and answered so (401), not with its
        refusal. On a database thread. ``body_sha256``: see :func:`authenticate`."""
        now = self.now()
        by = authenticate(request, body, self.audience, now, body_sha256=body_sha256)
        signed = Signed(by, self.engine, now)
        try:
            yield signed
        except Exception as exc:
            if unavailability(exc) is None:
                signed.burn()
            raise

    @contextlib.asynccontextmanager
    async def signed_request_async(
        self, request: Request, body: bytes, *, body_sha256: str | None = None
    ) -> AsyncIterator[Signed]:
        """:meth:`signed_request` for a handler whose work is not all on a database thread
        (a session's document is parsed on a parsing thread): the signature is checked on
        the event loop, a refusal's nonce used up on a database thread."""
        now = self.now()
        by = authenticate(request, body, self.audience, now, body_sha256=body_sha256)
        signed = Signed(by, self.engine, now)
        try:
            yield signed
        except Exception as exc:
            if unavailability(exc) is None and not signed.used:
                await self.blocking(signed.burn)
            raise

    def maybe_prune(self) -> None:
        """Now and then, forget request nonces too old to be replayed anyway. Skipped when
        the database is busy: the request's own write is committed, and a 503 now would
        make its client retry a write that succeeded."""
        if secrets_module.randbelow(100) == 0:
            try:
                with self.engine.begin() as connection:
                    prune_request_nonces(connection, self.now())
            except (DBAPIError, PoolTimeoutError) as exc:
                if unavailability(exc) is None:
                    raise
