"""The sms over HTTP (Starlette): thin routes over :class:`confide.sms.service.Sms`.

Errors are ``application/problem+json`` (RFC 9457); no stack trace leaves the server.
A signed request's replay record is written in the same transaction as its effect.
"""

from __future__ import annotations

import secrets as secrets_module
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.crypto.requests import SignedBy, canonical_query, verify_request
from confide.crypto.wallet import normalise_address
from confide.db.replay import prune_request_nonces, record_request
from confide.errors import AuthError, ConfideError, SecretError, SessionError
from confide.jsonsafe import loads_bounded
from confide.sms.openapi import openapi_document
from confide.sms.secrets import (
    MAX_VALUE_BYTES,
    SecretExistsError,
    SecretNotFoundError,
    SecretRef,
)
from confide.sms.service import Sms
from confide.sms.session_document import SessionDocument, parse_session
from confide.sms.sessions import (
    SessionConflictError,
    SessionForbiddenError,
    SessionNotFoundError,
    StoredSession,
)

Clock = Callable[[], float]
SESSION_BODY_LIMIT = 1 << 20


class HttpProblemError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def problem(status: int, title: str, detail: str) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never read in full)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpProblemError(413, "Payload Too Large", f"a secret value is at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HttpProblemError(
                413, "Payload Too Large", f"a secret value is at most {limit} bytes"
            )
    return bytes(body)


class _Handlers:
    """The routes' handlers, over one :class:`Sms` and a clock."""

    def __init__(self, sms: Sms, clock: Clock) -> None:
        self.sms = sms
        self.clock = clock

    def now(self) -> int:
        return int(self.clock())

    def authenticate(self, request: Request, body: bytes) -> SignedBy:
        try:
            return verify_request(
                request.headers,
                audience=self.sms.config.audience,
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
        it later (when it would no longer be refused) must not succeed."""
        try:
            with self.sms.engine.begin() as connection:
                record_request(connection, signed, self.now())
        except AuthError:
            pass  # already recorded

    def maybe_prune(self) -> None:
        """Now and then, forget request nonces too old to be replayed anyway."""
        if secrets_module.randbelow(100) == 0:
            with self.sms.engine.begin() as connection:
                prune_request_nonces(connection, self.now())

    async def info(self, request: Request) -> Response:
        return JSONResponse(self.sms.info())

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def requester_secret(self, request: Request) -> Response:
        owner = _address(request.path_params["address"])
        ref = SecretRef(owner, "requester", request.path_params["name"])
        _check_ref(ref)
        if request.method == "HEAD":
            found = self.sms.secrets.exists(ref)
            return Response(status_code=200 if found else 404, headers={"content-length": "0"})
        body = await read_body(request, MAX_VALUE_BYTES)
        signed = self.authenticate(request, body)
        if signed.address != owner:
            raise HttpProblemError(403, "Forbidden", "only the owner may write a requester secret")
        update = request.query_params.get("update") == "true"
        try:
            with self.sms.engine.begin() as connection:
                record_request(connection, signed, self.now())
                version = self.sms.secrets.put_in(
                    connection, ref, body, update=update, now=self.now()
                )
        except AuthError as exc:
            raise HttpProblemError(401, "Unauthorized", str(exc)) from None
        except (SecretExistsError, IntegrityError) as exc:
            self.burn(signed)
            detail = str(exc) if isinstance(exc, SecretError) else "written concurrently: retry"
            raise HttpProblemError(409, "Conflict", detail) from None
        except SecretNotFoundError as exc:
            self.burn(signed)
            raise HttpProblemError(404, "Not Found", str(exc)) from None
        except BaseException:
            self.burn(signed)
            raise
        self.maybe_prune()
        return JSONResponse({"name": ref.name, "version": version}, status_code=201)

    async def signed_json(self, request: Request) -> tuple[SignedBy, dict[str, Any]]:
        body = await read_body(request, SESSION_BODY_LIMIT)
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

    def session_call(self, signed: SignedBy, action: Callable[[], StoredSession]) -> StoredSession:
        """Run a session store call; its refusals become HTTP problems, nonce used up."""
        try:
            with self.sms.engine.begin() as connection:
                record_request(connection, signed, self.now())
        except AuthError as exc:
            raise HttpProblemError(401, "Unauthorized", str(exc)) from None
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

    async def create_session(self, request: Request) -> Response:
        signed, body = await self.signed_json(request)
        document = self.parsed_session(signed, body)
        stored = self.session_call(
            signed, lambda: self.sms.sessions.create(signed.address, document, self.now())
        )
        return JSONResponse(session_json(stored), status_code=201)

    async def session_resource(self, request: Request) -> Response:
        owner = _address(request.path_params["owner"])
        name = request.path_params["name"]
        if request.method == "GET":
            signed = self.authenticate(request, b"")
            stored = self.session_call(
                signed, lambda: self.sms.sessions.current(signed.address, owner, name)
            )
            return JSONResponse(session_json(stored))
        signed, body = await self.signed_json(request)
        document = self.parsed_session(signed, body)
        if document.name != name:
            self.burn(signed)
            raise HttpProblemError(400, "Bad Request", f"the document names {document.name!r}")
        stored = self.session_call(
            signed, lambda: self.sms.sessions.update(signed.address, owner, document, self.now())
        )
        return JSONResponse(session_json(stored))

    async def session_history(self, request: Request) -> Response:
        owner = _address(request.path_params["owner"])
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


def create_app(sms: Sms, clock: Clock) -> Starlette:
    h = _Handlers(sms, clock)
    routes = [
        Route("/v1/info", h.info, methods=["GET"]),
        Route("/health", h.health, methods=["GET"]),
        Route("/openapi.json", h.openapi, methods=["GET"]),
        Route(
            "/v1/requesters/{address}/secrets/{name}",
            h.requester_secret,
            methods=["PUT", "HEAD"],
        ),
        Route("/v1/sessions", h.create_session, methods=["POST"]),
        Route("/v1/sessions/{owner}/{name}", h.session_resource, methods=["GET", "PUT"]),
        Route("/v1/sessions/{owner}/{name}/history", h.session_history, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {
        HttpProblemError: on_problem,
        HTTPException: on_http,
        ConfideError: on_refusal,
        Exception: on_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers)


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


async def on_error(request: Request, exc: Exception) -> Response:
    # Nothing about the failure leaves the server: it could carry data.
    return problem(500, "Internal Server Error", "the sms failed; see its log")


def session_json(stored: StoredSession) -> dict[str, Any]:
    """A session as clients see it: never a secret value (the document holds none)."""
    document = stored.document
    return {
        "name": stored.name,
        "owner": stored.owner,
        "hash": stored.hash,
        "predecessor": stored.predecessor,
        "version": document["version"],
        "services": document["services"],
        "volumes": [{**volume, "tag": None} for volume in document["volumes"]],
        "secrets": document["secrets"],
        "access_policy": document["access_policy"],
        "security": document["security"],
        "created_at": stored.created_at,
    }


def _address(text: str) -> str:
    try:
        return normalise_address(text)
    except AuthError as exc:
        raise HttpProblemError(400, "Bad Request", str(exc)) from None


def _check_ref(ref: SecretRef) -> None:
    try:
        ref.check()
    except SecretError as exc:
        raise HttpProblemError(400, "Bad Request", str(exc)) from None
