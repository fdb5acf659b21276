"""The sms over HTTP (Starlette): thin routes over :class:`confide.sms.service.Sms`.

Errors are ``application/problem+json`` (RFC 9457), answered by class from one table
(``confide.sms.http_common.PROBLEMS``); no stack trace leaves the server. A signed
request's replay record is written in the same transaction as its effect, and a refused
one's nonce is used up (``confide.web.handlers``). The routes live by subject: secrets
(``http_secrets``), sessions (``http_sessions``), attestation and volumes
(``http_attest``); this module builds the app.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.attestation.verifier import Verifier
from confide.db.stores import DatabaseNonceStore
from confide.sms.attest import Attestations
from confide.sms.http_attest import AttestHandlers
from confide.sms.http_common import PROBLEMS, SmsHandlers
from confide.sms.http_records import RecordHandlers
from confide.sms.http_secrets import SecretHandlers
from confide.sms.http_sessions import SessionHandlers
from confide.sms.openapi import openapi_document
from confide.sms.service import Sms
from confide.web.handlers import Clock
from confide.web.health import Health, database_probe
from confide.web.info import info_route
from confide.web.limits import BodyLimits, Limits, path_patterns
from confide.web.problems import exception_handlers

_log = logging.getLogger("confide.sms")
# The routes whose body may come without a signature (confide.web.limits): every other
# body is refused at once, unread, when its signature headers are missing or stale.
UNSIGNED_BODIES = path_patterns(
    "/v1/attest",
    "/v1/attest/challenge",
    "/v1/task-orders/check",
    "/v1/sessions/{owner}/{name}/volumes/{volume}/tags",
)


def create_app(
    sms: Sms,
    clock: Clock,
    verifiers: Mapping[str, Verifier] | None = None,
    limits: Limits | None = None,
) -> Starlette:
    """The sms's ASGI app. ``verifiers`` defaults to what the sms's configuration enables
    (sim only with ``allow_sim``; sgx/tdx with collateral); ``limits``: its bodies'."""
    health = Health(database_probe(sms.engine))
    h = SmsHandlers(sms, clock)
    attestations = Attestations(
        sms, sms.verifiers() if verifiers is None else verifiers, DatabaseNonceStore(sms.engine)
    )
    routes = [
        *public_routes(sms),
        Route("/ready", health.ready, methods=["GET"]),
        *SecretHandlers(h).routes(),
        *SessionHandlers(h).routes(),
        *AttestHandlers(h, attestations).routes(),
        *RecordHandlers(h).routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        try:
            yield
        finally:
            health.close()
            await h.stop_database_threads()

    return Starlette(
        routes=routes,
        exception_handlers=exception_handlers(PROBLEMS, "sms", _log),
        lifespan=lifespan,
        middleware=[
            Middleware(BodyLimits, clock=clock, unsigned_bodies=UNSIGNED_BODIES, limits=limits)
        ],
    )


def public_routes(sms: Sms) -> list[Route]:
    """The routes anyone may call without a signature and that touch no database."""

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        info_route(sms.info, sms.tokens.sign_blob),  # with ?challenge=, the key's proof
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
