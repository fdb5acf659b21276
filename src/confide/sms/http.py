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
from confide.errors import AuthError, ConfideError, SecretError
from confide.sms.secrets import (
    MAX_VALUE_BYTES,
    SecretExistsError,
    SecretNotFoundError,
    SecretRef,
)
from confide.sms.service import Sms

Clock = Callable[[], float]


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


def create_app(sms: Sms, clock: Clock) -> Starlette:
    def now() -> int:
        return int(clock())

    def authenticate(request: Request, body: bytes) -> SignedBy:
        try:
            return verify_request(
                request.headers,
                audience=sms.config.audience,
                method=request.method,
                path=request.url.path,
                query=canonical_query(request.query_params.multi_items()),
                content_type=request.headers.get("content-type", ""),
                body=body,
                now=now(),
            )
        except AuthError as exc:
            raise HttpProblemError(401, "Unauthorized", str(exc)) from None

    def burn(signed: SignedBy) -> None:
        """A refused request's nonce is used up too, in a transaction of its own: replaying
        it later (when it would no longer be refused) must not succeed."""
        try:
            with sms.engine.begin() as connection:
                record_request(connection, signed, now())
        except AuthError:
            pass  # already recorded

    def maybe_prune() -> None:
        """Now and then, forget request nonces too old to be replayed anyway."""
        if secrets_module.randbelow(100) == 0:
            with sms.engine.begin() as connection:
                prune_request_nonces(connection, now())

    async def info(request: Request) -> Response:
        return JSONResponse(sms.info())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def requester_secret(request: Request) -> Response:
        owner = _address(request.path_params["address"])
        ref = SecretRef(owner, "requester", request.path_params["name"])
        _check_ref(ref)
        if request.method == "HEAD":
            found = sms.secrets.exists(ref)
            return Response(status_code=200 if found else 404, headers={"content-length": "0"})
        body = await read_body(request, MAX_VALUE_BYTES)
        signed = authenticate(request, body)
        if signed.address != owner:
            raise HttpProblemError(403, "Forbidden", "only the owner may write a requester secret")
        update = request.query_params.get("update") == "true"
        try:
            with sms.engine.begin() as connection:
                record_request(connection, signed, now())
                version = sms.secrets.put_in(connection, ref, body, update=update, now=now())
        except AuthError as exc:
            raise HttpProblemError(401, "Unauthorized", str(exc)) from None
        except (SecretExistsError, IntegrityError) as exc:
            burn(signed)
            detail = str(exc) if isinstance(exc, SecretError) else "written concurrently: retry"
            raise HttpProblemError(409, "Conflict", detail) from None
        except SecretNotFoundError as exc:
            burn(signed)
            raise HttpProblemError(404, "Not Found", str(exc)) from None
        except BaseException:
            burn(signed)
            raise
        maybe_prune()
        return JSONResponse({"name": ref.name, "version": version}, status_code=201)

    routes = [
        Route("/v1/info", info, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route(
            "/v1/requesters/{address}/secrets/{name}",
            requester_secret,
            methods=["PUT", "HEAD"],
        ),
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
