"""The sms over HTTP (Starlette): thin routes over :class:`confide.sms.service.Sms`.

Errors are ``application/problem+json`` (RFC 9457); no stack trace leaves the server.
A signed request's replay record is written in the same transaction as its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets as secrets_module
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.attestation.verifier import Verifier
from confide.crypto.info_proof import CHALLENGE_BYTES, INFO_LABEL, info_message
from confide.crypto.requests import SignedBy, canonical_query, verify_request
from confide.db.availability import UNAVAILABLE_DETAIL, cause, unavailability
from confide.db.engine import KeptReads, reading
from confide.db.replay import prune_request_nonces, record_request
from confide.db.stores import DatabaseNonceStore
from confide.errors import AuthError, ConfideError, SecretError, SessionError
from confide.jsonsafe import loads_bounded
from confide.sms.attest import Attestations, current_tags
from confide.sms.batching import Coalescer, membership
from confide.sms.http_attest import AttestHandlers
from confide.sms.http_common import HttpProblemError, path_address, problem, read_body
from confide.sms.http_secrets import SecretHandlers
from confide.sms.openapi import openapi_document
from confide.sms.secrets import BATCH, SecretExistsError, SecretRef
from confide.sms.service import Sms
from confide.sms.session_document import SessionDocument, parse_session
from confide.sms.sessions import (
    SessionConflictError,
    SessionForbiddenError,
    SessionNotFoundError,
    StoredSession,
)

Clock = Callable[[], float]
P = ParamSpec("P")
T = TypeVar("T")
POSTGRESQL_THREADS = 3  # requests a PostgreSQL sms works on at once (docs/benchmarks.md)
QUICK_READ_THREADS = 2  # and batches of HEAD checks, on threads of their own
SESSION_BODY_LIMIT = 1 << 20
RETRY_AFTER_SECONDS = 1  # what a 503 (database unavailable) tells clients to wait
_log = logging.getLogger("confide.sms")


class _Handlers:
    """The routes' handlers, over one :class:`Sms` and a clock."""

    def __init__(self, sms: Sms, clock: Clock) -> None:
        self.sms = sms
        self.clock = clock
        # Database work runs on these threads, never on the event loop. SQLite gets one:
        # it has one writer anyway (the grant, the challenge and the push each write),
        # and more threads only queue on its lock and on the GIL, which cost a third more
        # CPU per attestation (docs/benchmarks.md). PostgreSQL gets a few, so that one
        # request's round trips overlap another's work; with more, they contend for the
        # GIL and a HEAD check's p99 grows (3 measured best of 2, 3, 4 and 8).
        self.threads = 1 if sms.engine.dialect.name == "sqlite" else POSTGRESQL_THREADS
        self.database: ThreadPoolExecutor | None = None  # made on first use (event loop)
        # HEAD checks that read the database are read in batches (one statement for those
        # that arrived together). On PostgreSQL the batches run on threads of their own:
        # fewer threads suit them best (2: p99 3.1 ms where 3 gave 8.6 ms at saturation),
        # more suit attestations, and a burst of checks does not queue behind slower work.
        self.quick: ThreadPoolExecutor | None = None
        lanes = 1 if sms.engine.dialect.name == "sqlite" else QUICK_READ_THREADS
        self.existence = Coalescer(membership(self._existing), lanes=lanes, limit=BATCH)
        # Each of those threads keeps its read connection (KeptReads): on SQLite it saved
        # about 4 % of an attestation's server CPU (the pool's checkout and check-in).
        self.reads = KeptReads(sms.engine)

    async def blocking(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args, **kwargs)`` on the database threads (what touches the database
        blocks: it must not stall the event loop, nor other requests)."""
        if self.database is None:
            self.database = self._executor(self.threads, "sms-db")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.database, functools.partial(work, *args, **kwargs))

    async def _existing(self, refs: list[SecretRef]) -> set[SecretRef]:
        """Which of ``refs`` exist, for :attr:`existence`: on SQLite in place, on the event
        loop, since a read in WAL mode takes no lock and never waits for a writer (tens of
        microseconds); handing it to the database thread and back cost its p99 (2 → 10 to
        47 ms at saturation, the two threads trading the GIL). On PostgreSQL it is a
        round trip, so it goes to threads of its own."""
        if self.sms.engine.dialect.name == "sqlite":
            return self.sms.secrets.exists_many(refs)
        if self.quick is None:
            self.quick = self._executor(QUICK_READ_THREADS, "sms-read")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.quick, self.sms.secrets.exists_many, refs)

    def _executor(self, threads: int, name: str) -> ThreadPoolExecutor:
        adopt = None if self.reads is None else self.reads.adopt
        return ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=adopt)

    async def stop_database_threads(self) -> None:
        """At shutdown: let the work under way finish (off the event loop), then close the
        threads' kept read connections. A later request (the app started again) gets new
        threads, with a keeper of their own: none of them can be handed a connection
        that this shutdown closes."""
        executors, self.database, self.quick = (self.database, self.quick), None, None
        reads = self.reads
        if reads is not None:
            self.reads = KeptReads(self.sms.engine)
        for executor in executors:
            if executor is not None:
                await asyncio.to_thread(executor.shutdown)
        if reads is not None:
            reads.close()

    def now(self) -> int:
        return int(self.clock())

    def authenticate(self, request: Request, body: bytes) -> SignedBy:
        try:
            return verify_request(
                request.headers,
                audience=self.sms.audience,
                method=request.method,
                path=request.url.path,
                query=canonical_query(request.query_params.multi_items()),
                content_type=request.headers.get("content-type", ""),
                body=body,
                now=self.now(),
            )
        except AuthError as exc:
            raise HttpProblemError(401, "Unauthorized", str(exc)) from None

    def burn(self, signed: SignedBy) -> None:
        """A refused request's nonce is used up too, in a transaction of its own: replaying
        it later (when it would no longer be refused) must not succeed. Not when the
        database is what failed: it cannot take the write either, and the client retries
        with a new signature (a fresh nonce)."""
        if unavailability(sys.exception()) is not None:
            return
        try:
            with self.sms.engine.begin() as connection:
                record_request(connection, signed, self.now())
        except AuthError:
            pass  # already recorded

    def maybe_prune(self) -> None:
        """Now and then, forget request nonces too old to be replayed anyway. Skipped when
        the database is busy: the request's own write is committed, and a 503 now would
        make its client retry a write that succeeded."""
        if secrets_module.randbelow(100) == 0:
            try:
                with self.sms.engine.begin() as connection:
                    prune_request_nonces(connection, self.now())
            except (DBAPIError, PoolTimeoutError) as exc:
                if unavailability(exc) is None:
                    raise

    async def info(self, request: Request) -> Response:
        """Public. With ``?challenge=<64 hex>``, also a ``proof``: the token key's
        signature over the challenge and this document (confide.crypto.info_proof)."""
        info = self.sms.info()
        challenge = request.query_params.get("challenge")
        if challenge is not None:
            try:
                raw = bytes.fromhex(challenge)
            except ValueError:
                raw = b""
            if len(raw) != CHALLENGE_BYTES:
                raise HttpProblemError(400, "Bad Request", "challenge is 32 bytes as 64 hex")
            info["proof"] = self.sms.tokens.sign_blob(INFO_LABEL, info_message(raw, info)).hex()
        return JSONResponse(info)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def signed_json(self, request: Request, body: bytes) -> tuple[SignedBy, dict[str, Any]]:
        signed = self.authenticate(request, body)
        try:
            document = loads_bounded(body, 4)
        except ValueError:
            self.burn(signed)
            raise HttpProblemError(400, "Bad Request", "the body is not JSON") from None
        if not isinstance(document, dict):
            self.burn(signed)
            raise HttpProblemError(400, "Bad Request", "the body is not a JSON object")
        return signed, document

    def parsed_session(self, signed: SignedBy, body: dict[str, Any]) -> SessionDocument:
        text, variables = body.get("yaml"), body.get("vars", {})
        if (
            not isinstance(text, str)
            or not isinstance(variables, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items())
        ):
            self.burn(signed)
            raise HttpProblemError(400, "Bad Request", 'expected {"yaml": "...", "vars": {...}}')
        try:
            return parse_session(text, variables, str(body.get("source") or "session"))
        except SessionError as exc:
            self.burn(signed)
            raise HttpProblemError(400, "Bad Request", str(exc)) from None

    def record(self, signed: SignedBy) -> None:
        """Use up a signed request's nonce in a transaction of its own (for reads, and for
        writes whose effect has its own guards); 401 on a replay."""
        try:
            with self.sms.engine.begin() as connection:
                record_request(connection, signed, self.now())
        except AuthError as exc:
            raise HttpProblemError(401, "Unauthorized", str(exc)) from None

    def session_call(self, signed: SignedBy, action: Callable[[], StoredSession]) -> StoredSession:
        """A session read: the nonce is used up first, then the store is asked."""
        self.record(signed)
        return self.session_refusals(action)

    def session_write(
        self, signed: SignedBy, action: Callable[[Callable[[Connection], None]], StoredSession]
    ) -> StoredSession:
        """A session write: the nonce is recorded in the write's own transaction (so the
        write and its replay record commit together), or used up if the write is refused."""

        def record(connection: Connection) -> None:
            record_request(connection, signed, self.now())

        try:
            return self.session_refusals(lambda: action(record))
        except HttpProblemError:
            self.burn(signed)
            raise
        except AuthError as exc:  # the replay record's UNIQUE constraint
            raise HttpProblemError(401, "Unauthorized", str(exc)) from None

    @staticmethod
    def session_refusals(action: Callable[[], StoredSession]) -> StoredSession:
        """Run a session store call; its refusals become HTTP problems."""
        try:
            return action()
        except SessionNotFoundError as exc:
            raise HttpProblemError(404, "Not Found", str(exc)) from None
        except SessionForbiddenError as exc:
            raise HttpProblemError(403, "Forbidden", str(exc)) from None
        except (SessionConflictError, SecretExistsError) as exc:
            raise HttpProblemError(409, "Conflict", str(exc)) from None
        except (SessionError, SecretError) as exc:
            raise HttpProblemError(400, "Bad Request", str(exc)) from None

    def tags(self, stored: StoredSession) -> dict[str, str | None]:
        """Each volume's current tag (None before its first), on one connection."""
        with reading(self.sms.engine) as connection:
            names = [v["name"] for v in stored.document["volumes"]]
            return current_tags(stored.owner, stored.name, names, connection)

    async def create_session(self, request: Request) -> Response:
        raw = await read_body(request, SESSION_BODY_LIMIT)
        return await self.blocking(self._create_session, request, raw)

    def _create_session(self, request: Request, raw: bytes) -> Response:
        signed, body = self.signed_json(request, raw)
        document = self.parsed_session(signed, body)
        stored = self.session_write(
            signed,
            lambda record: self.sms.sessions.create(signed.address, document, self.now(), record),
        )
        return JSONResponse(session_json(stored, self.tags(stored)), status_code=201)

    async def session_resource(self, request: Request) -> Response:
        owner = path_address(request.path_params["owner"])
        name = request.path_params["name"]
        # A read is GET or HEAD (Starlette adds HEAD to every GET route): only PUT writes.
        raw = await read_body(request, SESSION_BODY_LIMIT) if request.method == "PUT" else b""
        return await self.blocking(self._session_resource, request, raw, owner, name)

    def _session_resource(self, request: Request, raw: bytes, owner: str, name: str) -> Response:
        if request.method != "PUT":
            signed = self.authenticate(request, b"")
            stored = self.session_call(
                signed, lambda: self.sms.sessions.current(signed.address, owner, name)
            )
            return JSONResponse(session_json(stored, self.tags(stored)))
        signed, body = self.signed_json(request, raw)
        document = self.parsed_session(signed, body)
        if document.name != name:
            self.burn(signed)
            raise HttpProblemError(400, "Bad Request", f"the document names {document.name!r}")
        stored = self.session_write(
            signed,
            lambda record: self.sms.sessions.update(
                signed.address, owner, document, self.now(), record
            ),
        )
        return JSONResponse(session_json(stored, self.tags(stored)))

    async def session_history(self, request: Request) -> Response:
        owner = path_address(request.path_params["owner"])
        return await self.blocking(self._session_history, request, owner)

    def _session_history(self, request: Request, owner: str) -> Response:
        name = request.path_params["name"]
        signed = self.authenticate(request, b"")
        versions: list[StoredSession] = []

        def load() -> StoredSession:
            versions.extend(self.sms.sessions.history(signed.address, owner, name))
            return versions[-1]

        self.session_call(signed, load)
        history = [
            {"hash": v.hash, "predecessor": v.predecessor, "created_at": v.created_at}
            for v in versions
        ]
        return JSONResponse({"owner": owner, "name": name, "history": history})


def create_app(
    sms: Sms, clock: Clock, verifiers: Mapping[str, Verifier] | None = None
) -> Starlette:
    """The sms's ASGI app. ``verifiers`` defaults to what the sms's configuration enables
    (sim only with ``allow_sim``; sgx/tdx with collateral)."""
    h = _Handlers(sms, clock)
    attestations = Attestations(
        sms, sms.verifiers() if verifiers is None else verifiers, DatabaseNonceStore(sms.engine)
    )
    routes = [
        Route("/v1/info", h.info, methods=["GET"]),
        Route("/health", h.health, methods=["GET"]),
        Route("/openapi.json", h.openapi, methods=["GET"]),
        *SecretHandlers(h).routes(),
        Route("/v1/sessions", h.create_session, methods=["POST"]),
        Route("/v1/sessions/{owner}/{name}", h.session_resource, methods=["GET", "PUT"]),
        Route("/v1/sessions/{owner}/{name}/history", h.session_history, methods=["GET"]),
        *AttestHandlers(h, attestations).routes(),
    ]
    handlers: dict[Any, Any] = {
        HttpProblemError: on_problem,
        HTTPException: on_http,
        ConfideError: on_refusal,
        DBAPIError: on_database,
        PoolTimeoutError: on_database,
        Exception: on_error,
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        try:
            yield
        finally:
            await h.stop_database_threads()

    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def on_problem(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HttpProblemError):  # registered for that class only
        return await on_error(request, exc)
    return problem(exc.status, exc.title, exc.detail)


async def on_http(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return problem(status, str(detail), f"{request.method} {request.url.path}: {detail}")


async def on_refusal(request: Request, exc: Exception) -> Response:
    return problem(400, "Bad Request", str(exc))


async def on_database(request: Request, exc: Exception) -> Response:
    """A locked, timed-out or unreachable database is 503 with Retry-After: nothing was
    written (one transaction per write) and the same request, re-signed, may succeed."""
    what = unavailability(exc)
    if what is None:
        raise exc  # not availability: the 500 path (on_error), with the traceback logged
    _log.warning(
        "database %s (%s) on %s %s: answered 503",
        what,
        cause(exc),
        request.method,
        request.url.path,
    )
    response = problem(503, "Service Unavailable", UNAVAILABLE_DETAIL)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def on_error(request: Request, exc: Exception) -> Response:
    # Nothing about the failure leaves the server: it could carry data.
    return problem(500, "Internal Server Error", "the sms failed; see its log")


def session_json(stored: StoredSession, tags: Mapping[str, str | None]) -> dict[str, Any]:
    """A session as clients see it: never a secret value (the document holds none)."""
    document = stored.document
    return {
        "name": stored.name,
        "owner": stored.owner,
        "hash": stored.hash,
        "predecessor": stored.predecessor,
        "version": document["version"],
        "services": document["services"],
        "volumes": [{**volume, "tag": tags.get(volume["name"])} for volume in document["volumes"]],
        "secrets": document["secrets"],
        "access_policy": document["access_policy"],
        "security": document["security"],
        "created_at": stored.created_at,
    }
