"""What a request may cost a service before anyone knows who sent it (ASGI middleware).

A signed request's signature covers its body, so the body is read before the signature
can be verified: without limits, anyone could make a service hold bodies in memory. (An
sms without them went from 207 MiB to 3.7 GB under 3,000 connections that never sent the
last byte of a 1 MiB body, and stayed at 3.1 GB after they closed.) So before the app
reads a byte of a body, :class:`BodyLimits`:

- on a route whose body must be signed, checks that the four signature headers are
  present, well formed and fresh (:func:`confide.crypto.requests.signature_headers`),
  and refuses at once otherwise (401, naming the header);
- admits the body into a budget of bytes shared by every body being read (``budget``):
  a body that does not fit answers 503 with ``Retry-After``. A body counts for its
  declared length (a chunked one for ``max_body``) until its request is answered;
- gives the whole body ``read_timeout`` seconds to arrive, then answers 408;
- cuts a body at ``max_body`` bytes (413), should a route read on (each route refuses
  a longer body itself, from its ``Content-Length``, before reading it).

Those refusals close the connection (its unread body would otherwise have to be read).
A request without a body (GET and HEAD: ``/health``, ``/ready``, existence checks)
passes through untouched, at the cost of one comparison; one with a body costs a scan of
its headers and a deadline on each read (a few microseconds). The number of connections
is uvicorn's to bound (``limit_concurrency``; see :mod:`confide.web.server`).

A client that goes away in the middle of its body is one log line, not a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from confide.crypto.requests import signature_headers
from confide.errors import AuthError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_SECONDS = 1
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
_log = logging.getLogger("confide.web")


@dataclass(frozen=True)
class Limits:
    """The limits of one service's HTTP edge; the defaults suit the sms, hub and storage.

    ``budget``: bytes of request bodies held at once, over all requests. ``max_body``:
    the largest body any route takes (routes have their own, smaller limits).
    ``read_timeout``: seconds for a whole body to arrive. ``concurrency``: connections
    and requests at once (beyond, uvicorn answers 503). ``keep_alive``: seconds an idle
    connection stays open. ``graceful_shutdown``: seconds that requests under way get
    to finish after SIGTERM.
    """

    budget: int = 64 << 20
    max_body: int = 1 << 20
    read_timeout: float = 10.0
    concurrency: int = 4096
    keep_alive: float = 5.0
    graceful_shutdown: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.max_body <= self.budget:
            raise ValueError("limits: 0 < max_body <= budget")
        if min(self.read_timeout, self.concurrency, self.keep_alive) <= 0:
            raise ValueError("limits: read_timeout, concurrency and keep_alive are positive")


def path_patterns(*templates: str) -> Callable[[str], bool]:
    """Whether a path matches one of ``templates`` (Starlette's ``{name}`` segments)."""
    parts = (
        re.sub(r"\{[^}/]+\}", "[^/]+", re.escape(t).replace(r"\{", "{").replace(r"\}", "}"))
        for t in templates
    )
    pattern = re.compile("|".join(f"(?:{part})" for part in parts))
    return lambda path: pattern.fullmatch(path) is not None


class BodyLimits:
    """The middleware. ``unsigned_bodies(path)``: whether a route takes a body without a
    signature (for instance an attestation, whose evidence is its proof); every other
    body must come with the signature headers. ``clock``: the service's clock (seconds),
    which judges a timestamp's freshness."""

    def __init__(
        self,
        app: App,
        *,
        clock: Callable[[], float],
        unsigned_bodies: Callable[[str], bool],
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        self.unsigned_bodies = unsigned_bodies
        self.limits = limits or Limits()
        self.buffered = 0  # bytes of bodies admitted and not yet answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            await self.app(scope, receive, send)
            return
        declared, chunked = _body_length(scope["headers"])
        if declared is None:
            await _refuse(send, 400, "Bad Request", "Content-Length is not a number")
            return
        if declared == 0 and not chunked:
            await self.app(scope, receive, send)
            return
        limits = self.limits
        if not self.unsigned_bodies(scope["path"]):
            try:
                signature_headers(Headers(scope=scope), now=int(self.clock()))
            except AuthError as exc:
                await _refuse(send, 401, "Unauthorized", str(exc))
                return
        # A body announced over max_body is refused by its route from the announcement
        # (with the route's own limit), or cut at max_body here if the route reads on.
        reserved = limits.max_body if chunked else min(declared, limits.max_body)
        bounded = chunked or declared > limits.max_body
        if self.buffered + reserved > limits.budget:
            await _refuse(
                send,
                503,
                "Service Unavailable",
                "too many request bodies are being received at once: retry",
                retry=True,
            )
            return
        self.buffered += reserved
        try:
            await self._bounded(scope, receive, send, reserved if bounded else None)
        finally:
            self.buffered -= reserved

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, bound: int | None) -> None:
        """The app, reading its body by a deadline (and up to ``bound`` bytes, when its
        announced length does not bound it already)."""
        deadline = asyncio.get_running_loop().time() + self.limits.read_timeout
        state = [0, False]  # bytes received (counted against a bound), whole body received

        async def receive_by_deadline() -> Message:
            if state[1]:  # after the body: waiting for a disconnect is not limited
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimeoutError from None
            if not message.get("more_body", False):
                state[1] = True
            if bound is not None:
                state[0] += len(message.get("body", b""))
                if state[0] > bound:
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, receive_by_deadline, send)
        except _BodyTimeoutError:
            seconds = self.limits.read_timeout
            await _refuse(
                send, 408, "Request Timeout", f"the body did not arrive within {seconds:g} s"
            )
        except _BodyTooLargeError:
            await _refuse(send, 413, "Payload Too Large", f"the body is at most {bound} bytes")
        except ClientDisconnect:
            client = scope.get("client") or ("?", 0)
            _log.warning(
                "%s %s: the client (%s) went away before the end of its body",
                scope["method"],
                scope["path"],
                client[0],
            )


class _BodyTimeoutError(Exception):
    """Raised into the app when its body's deadline passes (answered 408 here)."""


class _BodyTooLargeError(Exception):
    """Raised into the app when a body passes its bound (answered 413 here)."""


def _body_length(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(declared length, chunked); the length is None when it is not a number, 0 when
    absent."""
    declared: int | None = 0
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            declared = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


async def _refuse(send: Send, status: int, title: str, detail: str, *, retry: bool = False) -> None:
    """A problem+json answer that closes the connection (the body, if any, stays unread)."""
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
