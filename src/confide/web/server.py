"""Run a service's ASGI app under uvicorn, with the limits of :mod:`confide.web.limits`
and a clean stop: what ``confide serve sms`` (and the hub and storage) call.

Beyond the body limits inside the app, uvicorn bounds connections and requests at once
(``limit_concurrency``, answered 503 beyond) and how long an idle connection stays open
(``timeout_keep_alive``), and a request's head must arrive within ``head_timeout`` and
be at most ``max_head_bytes`` long (:func:`head_timed_protocol`). The process's
open-file limit is raised to fit the connection limit when the hard limit allows, and the
connection limit lowered to fit it otherwise (a server out of descriptors cannot even
answer 503).

Memory that bodies held goes back to the system once they are answered: glibc's
allocator otherwise raises its mmap threshold as large blocks are freed, after which
bodies come from the heap and their pages stay (an sms held 170 MiB after a load that
started from 79 MiB; with the fixed thresholds below, 86 MiB). A service that streams
(the storage) asks for ``memory="reused"`` instead: there every piece of a stream is a
block of 64 KiB to 1 MiB, and a mapping per block tripled the CPU per byte (1.4 s of CPU
per 512 MiB uploaded against 4.5 s); a stream's blocks are few and reused, so its memory
stays flat either way.

SIGTERM and SIGINT stop the server gracefully: it stops accepting, lets the requests
under way finish (up to ``Limits.graceful_shutdown`` seconds), runs the app's shutdown,
writes one line to stderr and returns, so that the process exits 0. (uvicorn's own
handling re-raises the signal after its shutdown, so the process died of it: exit 143
and nothing said.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import uvicorn

from confide.errors import ConfideError
from confide.web.limits import Limits

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SPARE_FILES = 128  # descriptors beyond the connections: database, logs, files
# glibc's mallopt parameters, and the values that let body-sized blocks be unmapped
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_FROM = 64 << 10  # blocks from 64 KiB: mapped on their own, unmapped when freed
_TRIM_FROM = 128 << 10  # free memory at the heap's top beyond this goes back


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by a signal without dying of it."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopped_by: int | None = None
        self.cut_short = False  # requests under way were cancelled (or a forced exit)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
        self.handle_exit(sig, frame)  # a second ^C forces the exit, as in uvicorn

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        began = time.monotonic()
        await super().shutdown(sockets)
        grace = self.config.timeout_graceful_shutdown
        overran = grace is not None and time.monotonic() - began >= grace
        self.cut_short = self.force_exit or overran


def serve(
    app: Any,
    *,
    name: str,
    host: str,
    port: int,
    limits: Limits | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    proxy_headers: bool = False,
    memory: Literal["returned", "reused"] = "returned",
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT; returns after a clean shutdown.

    ``proxy_headers``: believe X-Forwarded-* from the addresses in FORWARDED_ALLOW_IPS
    (uvicorn's default: the loopback), for a service behind a TLS proxy. ``memory``: see
    the module's docstring.
    """
    if memory == "returned":
        give_freed_memory_back()
    server = make_server(
        app,
        host=host,
        port=port,
        limits=limits,
        tls_cert=tls_cert,
        tls_key=tls_key,
        proxy_headers=proxy_headers,
    )
    started = time.monotonic()
    server.run()
    if not server.started:  # uvicorn has said why (a port in use, a failed startup)
        raise SystemExit(1)
    cause = signal.Signals(server.stopped_by).name if server.stopped_by else "a request to stop"
    ran = f"{name} stopped on {cause} after {time.monotonic() - started:.0f} s"
    if server.cut_short:
        sys.stderr.write(f"{ran}: requests under way were cut short\n")
        raise SystemExit(1)
    sys.stderr.write(f"{ran}: requests under way finished, shut down cleanly\n")


def make_server(
    app: Any,
    *,
    host: str,
    port: int,
    limits: Limits | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    proxy_headers: bool = False,
) -> _Server:
    """The uvicorn server :func:`serve` runs (``run()`` it; in a thread, it leaves the
    signals alone and stops when ``should_exit`` is set)."""
    limits = limits or Limits()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=head_timed_protocol(limits.head_timeout, limits.max_head_bytes),
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        proxy_headers=proxy_headers,
        limit_concurrency=fit_open_files(limits.concurrency),
        timeout_keep_alive=int(limits.keep_alive),
        timeout_graceful_shutdown=int(limits.graceful_shutdown),
    )
    return _Server(config)


def head_timed_protocol(seconds: float, max_bytes: int = 64 << 10) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol, with a deadline and a size limit on each request's
    head.

    uvicorn times out an idle keep-alive connection, but not one that never completes a
    request's head: a client that opens connections and sends a few bytes of a request
    line holds them forever, until ``limit_concurrency`` turns every other client away
    (health checks included). Here a head (request line and headers) must be complete
    within ``seconds`` of the connection or of the previous response, or the connection
    is closed.

    Nor does httptools bound a head's size: it keeps every header it is sent (one
    connection sent 150 MiB of headers in 0.5 s; four took an sms from 79 to 688 MiB).
    Here the bytes received while a head is incomplete are counted, and past
    ``max_bytes`` the connection is answered 431 and closed, after at most one more read
    (256 KiB) has been buffered.

    Without httptools (uvicorn's pure-Python h11 protocol, whose heads are bounded by
    ``h11_max_incomplete_event_size``), no deadline.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415
    except ImportError:
        return "auto"

    class HeadTimedProtocol(HttpToolsProtocol):
        head_timer: asyncio.TimerHandle | None = None
        # Bytes received since the current head began (approximately: a read that ends
        # one request and begins the next counts for neither), while one is incomplete.
        head_bytes = 0
        in_head = True

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.head_timer = self.loop.call_later(seconds, self.head_late)

        def data_received(self, data: bytes) -> None:
            if self.in_head:
                self.head_bytes += len(data)
            super().data_received(data)
            if self.in_head and self.head_bytes > max_bytes:
                self.head_too_large()

        def on_headers_complete(self) -> None:
            self.in_head = False
            self.head_bytes = 0
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.in_head = True  # what follows is the next request's head
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Waiting for the next request's head (uvicorn armed its keep-alive timer),
            # not running one that was pipelined.
            if self.timeout_keep_alive_task is not None and self.head_timer is None:
                self.head_timer = self.loop.call_later(seconds, self.head_late)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None
            super().connection_lost(exc)

        def head_late(self) -> None:
            self.head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def head_too_large(self) -> None:
            transport = self.transport
            if transport.is_closing():
                return
            self.headers = []  # let go of what was parsed now, not at the close
            if self.cycle is None or self.cycle.response_complete:  # not mid-response
                body = json.dumps(
                    {
                        "type": "about:blank",
                        "title": "Request Header Fields Too Large",
                        "status": 431,
                        "detail": f"a request's head is at most {max_bytes} bytes",
                    }
                ).encode()
                transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-type: application/problem+json\r\n"
                    + f"content-length: {len(body)}\r\n".encode()
                    + b"connection: close\r\n\r\n"
                    + body
                )
            transport.close()

    return HeadTimedProtocol


def check_bind(host: str, service: str, *, tls: bool, behind_tls_proxy: bool) -> None:
    """Refuse to bind ``host`` beyond this machine without TLS (DESIGN.md, "Transport"):
    ``tls``, the service was given a certificate and key; ``behind_tls_proxy``, a TLS
    proxy fronts it."""
    if is_loopback_host(host) or tls or behind_tls_proxy:
        return
    raise ConfideError(
        f"binding {host} exposes the {service} beyond this machine: give --tls-cert and "
        f"--tls-key, or --behind-tls-proxy if a TLS proxy fronts it"
    )


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def give_freed_memory_back() -> None:
    """Fixed glibc allocator thresholds (see the module's docstring); elsewhere, nothing.
    The hot paths allocate no block of 64 KiB, so the mappings cost them nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc
    mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_FROM)


def fit_open_files(connections: int) -> int:
    """Raise the soft open-file limit for ``connections`` (up to the hard limit); the
    number of connections that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return connections
    return max(1, min(connections, soft - _SPARE_FILES))
