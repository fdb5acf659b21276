"""Request bodies read within a bound, JSON objects from them, addresses from paths."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request

from confide.crypto.wallet import normalise_address
from confide.errors import AuthError
from confide.jsonsafe import JsonTooDeepError, loads_bounded
from confide.web.problems import HttpProblemError

_log = logging.getLogger("confide.web")


def _too_large(limit: int) -> HttpProblemError:
    return HttpProblemError(413, "Payload Too Large", f"the body is at most {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never read in full).

    A client that goes away before its last byte gets a 400 it will not read and one
    short log line, not a traceback: it is the client's doing, and common.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
    except ClientDisconnect:
        _log.info(
            "client disconnected after %d body bytes: %s %r",  # %r: no control bytes
            len(body),
            request.method,
            request.url.path[:200],
        )
        raise HttpProblemError(
            400, "Bad Request", "the client disconnected before the body was complete"
        ) from None
    return bytes(body)


def json_object(body: bytes, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object, nested at most ``max_depth`` levels; 400 otherwise."""
    try:
        document = loads_bounded(body, max_depth)
    except JsonTooDeepError:
        raise HttpProblemError(
            400, "Bad Request", f"the body nests deeper than {max_depth} levels"
        ) from None
    except ValueError:  # not UTF-8, or not JSON
        raise HttpProblemError(400, "Bad Request", "the body is not JSON") from None
    if not isinstance(document, dict):
        raise HttpProblemError(400, "Bad Request", "the body is not a JSON object")
    return document


def path_address(text: str) -> str:
    """A wallet address from a path or body, in any letter case; 400 if it is not one."""
    try:
        return normalise_address(text)
    except AuthError as exc:
        raise HttpProblemError(400, "Bad Request", str(exc)) from None
