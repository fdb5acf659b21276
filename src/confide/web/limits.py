"""What a request may cost a service before anyone knows who sent it (ASGI middleware).

A signed request's signature covers its body, so the body is read before the signature
can be verified: without limits, anyone could make a service hold bodies in memory. (An
sms without them went from 207 MiB to 3.7 GB under 3,000 connections that never sent the
last byte of a 1 MiB body, and stayed at 3.1 GB after they closed.) So before the app
reads a byte of a body, :class:`BodyLimits`:

- on a route whose body must be signed, checks that the four signature headers are
  present, well formed and fresh (:func:`confide.crypto.requests.signature_headers`),
  and refuses at once otherwise (401, naming the header);
- refuses a body without a ``Content-Length`` (``Transfer-Encoding: chunked``) at once
  (411): its size is unknown until it has been read, so it could only be admitted for
  ``max_body``, and a few of them, on a route that needs no signature, would hold the
  whole budget (confide's clients always announce their bodies' lengths);
- admits the body into a budget of bytes shared by every body being read (``budget``):
  a body that does not fit answers 503 with ``Retry-After``. A body counts for its
  declared length (at most ``max_body``) until its request is answered;
- gives the whole body ``read_timeout`` seconds to arrive, then answers 408;
- cuts a body at ``max_body`` bytes (413), should a route read on (each route refuses
  a longer body itself, from its ``Content-Length``, before reading it).

A route that streams its body instead of holding it (the storage's blob upload, up to
gigabytes, written out as it arrives: ``streamed_bodies``) keeps the signature-header
check and the 411, but its body is not counted in the budget nor cut at ``max_body``
(the route refuses a length over its own limit before reading), and instead of a
deadline for the whole body, each read must bring bytes within ``idle_timeout`` seconds
(a client that stops sending is answered 408; a slow, steady one is not cut).

Those refusals close the connection (its unread body would otherwise have to be read).
A request without a body (GET and HEAD: ``/health``, ``/ready``, existence checks)
passes through untouched, at the cost of one comparison; one with a body costs a scan of
its headers and one timer (a few microseconds). The number of connections
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

from starlette.requests import ClientDisconnect

from confide.crypto.requests import signature_headers
from confide.errors import AuthError
from confide.web.problems import RETRY_AFTER_SECONDS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
_log = logging.getLogger("confide.web")


@dataclass(frozen=True)
class Limits:
    """The limits of one service's HTTP edge; the defaults suit the sms, hub and storage.

    ``budget``: bytes of request bodies held at once, over all requests. ``max_body``:
    the largest body any route takes (routes have their own, smaller limits).
    ``read_timeout``: seconds for a whole body to arrive. ``head_timeout``: seconds for
    a request's head (request line and headers) to arrive, from the connection or the
    previous response. ``concurrency``: connections and requests at once (beyond,
    uvicorn answers 503). ``keep_alive``: seconds an idle connection stays open.
    ``graceful_shutdown``: seconds that requests under way get to finish after SIGTERM.
    ``max_head_bytes``: the largest request head (request line and headers) a connection
    may send (beyond, 431 and the connection is closed; see :mod:`confide.web.server`).
    ``idle_timeout``: seconds a streamed body (``BodyLimits(streamed_bodies=…)``) may go
    without a byte arriving.
    """

    budget: int = 64 << 20
    max_body: int = 1 << 20
    read_timeout: float = 10.0
    head_timeout: float = 10.0
    concurrency: int = 4096
    keep_alive: float = 5.0
    graceful_shutdown: float = 30.0
    max_head_bytes: int = 64 << 10
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.max_body <= self.budget:
            raise ValueError("limits: 0 < max_body <= budget")
        shortest = min(
            self.read_timeout,
            self.head_timeout,
            self.concurrency,
            self.keep_alive,
            self.idle_timeout,
        )
        if shortest <= 0:
            raise ValueError("limits: timeouts and concurrency are positive")
        if self.max_head_bytes < 1024:
            raise ValueError("limits: max_head_bytes is at least 1024")


def path_patterns(*templates: str) -> Callable[[str], bool]:
    """Whether a path matches one of ``templates`` (Starlette's ``{name}`` segments)."""
    parts = (
        re.sub(r"\{[^}/]+\}", "[^/]+", re.escape(t).replace(r"\{", "{").replace(r"\}", "}"))
        for t in templates
    )
    pattern = re.compile("|".join(f"(?:{part})" for part in parts))
    return lambda path: pattern.fullmatch(path) is not None


def route_path(scope: Scope) -> str:
    """The path the app routes by: without the ``root_path`` of a mount (``confide up``
    mounts the sms at ``/sms`` and the storage at ``/storage``, where the scope's path
    keeps the prefix, as Starlette's ``get_route_path`` reads it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root) :]
    return path


class BodyLimits:
    """The middleware. ``unsigned_bodies(path)``: whether a route takes a body without a
    signature (for instance an attestation, whose evidence is its proof); every other
    body must come with the signature headers. ``clock``: the service's clock (seconds),
    which judges a timestamp's freshness. ``streamed_bodies(path)``: whether a route
    streams its body (see the module's docstring); None: no route does."""

    def __init__(
        self,
        app: App,
        *,
        clock: Callable[[], float],
        unsigned_bodies: Callable[[str], bool],
        limits: Limits | None = None,
        streamed_bodies: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        self.unsigned_bodies = unsigned_bodies
        self.streamed_bodies = streamed_bodies
        self.limits = limits or Limits()
        self.buffered = 0  # bytes of bodies admitted and not yet answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            await self.app(scope, receive, send)
            return
        declared, chunked, signature = _scan(scope["headers"])
        if declared is None:
            await _refuse(send, 400, "Bad Request", "Content-Length is not a number")
            return
        if chunked:
            await _refuse(
                send,
                411,
                "Length Required",
                "a Content-Length is required: a body without one (Transfer-Encoding) "
                "is not accepted",
            )
            return
        if declared == 0:
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if not self.unsigned_bodies(path):
            try:
                signature_headers(signature, now=int(self.clock()))
            except AuthError as exc:
                await _refuse(send, 401, "Unauthorized", str(exc))
                return
        if self.streamed_bodies is not None and self.streamed_bodies(path):
            await self._streamed(scope, receive, send)
        else:
            await self._buffered(scope, receive, send, declared)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, declared: int) -> None:
        """A body held by its route: in the budget, cut at max_body, one deadline."""
        limits = self.limits
        # A body announced over max_body is refused by its route from the announcement
        # (with the route's own limit), or cut at max_body here if the route reads on.
        reserved = min(declared, limits.max_body)
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
        body = _Body(receive, reserved if declared > limits.max_body else None)
        loop = asyncio.get_running_loop()
        body.timer = loop.call_at(loop.time() + limits.read_timeout, body.expire)
        try:
            await self.app(scope, body.receive, send)
        except _BodyTimeoutError:
            seconds = limits.read_timeout
            await _refuse(
                send, 408, "Request Timeout", f"the body did not arrive within {seconds:g} s"
            )
        except _BodyTooLargeError:
            await _refuse(send, 413, "Payload Too Large", f"the body is at most {reserved} bytes")
        except ClientDisconnect:
            client = scope.get("client") or ("?", 0)
            _log.info(
                "%s %r: the client (%s) went away before the end of its body",  # %r: no
                scope["method"],  # control byte of the path reaches the log
                scope["path"][:200],
                client[0],
            )
        finally:
            body.timer.cancel()
            self.buffered -= reserved

    async def _streamed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A streamed body: no budget, no bound, an idle timeout per read."""
        idle = self.limits.idle_timeout
        body = _Body(receive, None, idle=idle)
        try:
            await self.app(scope, body.receive, send)
        except _BodyTimeoutError:
            await _refuse(
                send, 408, "Request Timeout", f"no byte of the body arrived for {idle:g} s"
            )
        except ClientDisconnect:
            client = scope.get("client") or ("?", 0)
            _log.info(
                "%s %r: the client (%s) went away before the end of its body",
                scope["method"],
                scope["path"][:200],
                client[0],
            )
        finally:
            body.stop_timer()


class _Body:
    """One request's body as the app reads it: by a deadline, and up to ``bound`` bytes
    when its announced length does not bound it already.

    One timer per request, not one per read: when it fires while the app waits for the
    body, the request's task is cancelled and the wait raises :class:`_BodyTimeoutError`
    (a cancellation from anywhere else goes on as one); when it fires while the app is
    busy elsewhere, the app's next read raises it.

    With ``idle`` (a streamed body), no deadline for the whole body: a timer per read,
    armed while the app waits for bytes, fires after ``idle`` seconds without any.
    """

    __slots__ = (
        "_receive",
        "bound",
        "complete",
        "expired",
        "idle",
        "received",
        "timer",
        "waiting",
    )

    def __init__(self, receive: Receive, bound: int | None, idle: float | None = None) -> None:
        self._receive = receive
        self.bound = bound
        self.idle = idle
        self.received = 0
        self.complete = self.expired = False
        self.waiting: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def expire(self) -> None:
        self.expired = True
        if self.waiting is not None:
            self.waiting.cancel()

    async def receive(self) -> Message:
        if self.complete:  # after the body: waiting for a disconnect is not limited
            return await self._receive()
        if self.expired:
            raise _BodyTimeoutError
        task = self.waiting = asyncio.current_task()
        if self.idle is not None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_at(loop.time() + self.idle, self.expire)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if self.expired and task is not None and task.uncancel() == 0:
                raise _BodyTimeoutError from None
            raise
        finally:
            self.waiting = None
            if self.idle is not None:
                self.stop_timer()
        if not message.get("more_body", False):
            self.complete = True
            if self.timer is not None:
                self.timer.cancel()
        if self.bound is not None:
            self.received += len(message.get("body", b""))
            if self.received > self.bound:
                raise _BodyTooLargeError
        return message


class _BodyTimeoutError(Exception):
    """Raised into the app when its body's deadline passes (answered 408 here)."""


class _BodyTooLargeError(Exception):
    """Raised into the app when a body passes its bound (answered 413 here)."""


_SIGNATURE_PREFIX = b"x-confide-"


def _scan(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[int | None, bool, dict[str, str]]:
    """(declared length, whether a Transfer-Encoding is given, the signature headers),
    in one pass; the length is None when it is not a number, 0 when absent."""
    declared: int | None = 0
    chunked = False
    signature: dict[str, str] = {}
    for name, value in headers:
        if name == b"content-length":
            declared = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
        elif name.startswith(_SIGNATURE_PREFIX):
            signature[name.decode("latin-1")] = value.decode("latin-1")
    return declared, chunked, signature


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
