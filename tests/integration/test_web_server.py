"""The server every service runs under (confide.web.server): connections that never
finish a request's head are closed, and connections beyond the limit are answered 503."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from confide.web.limits import Limits
from confide.web.server import make_server
from tests.integration.sms_server import free_port


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@contextlib.contextmanager
def _serving(limits: Limits) -> Iterator[tuple[str, int]]:
    port = free_port()
    app = Starlette(routes=[Route("/health", _health)])
    server = make_server(app, host="127.0.0.1", port=port, limits=limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(20)


def _closed_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``connection`` within ``seconds`` (without answering)."""
    connection.settimeout(seconds)
    try:
        return connection.recv(4096) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _get_health(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return answer


def test_a_request_head_that_never_completes_is_closed() -> None:
    with _serving(Limits(head_timeout=0.5)) as address:
        silent = [socket.create_connection(address, timeout=5) for _ in range(10)]
        partial = [socket.create_connection(address, timeout=5) for _ in range(10)]
        for connection in partial:
            connection.sendall(b"GET /hea")
        kept = socket.create_connection(address, timeout=5)  # a head after a response
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /he")
        began = time.monotonic()
        try:
            assert all(_closed_within(c, 5) for c in [*silent, *partial, kept])
            assert 0.3 < time.monotonic() - began < 4
            assert _get_health(address).startswith(b"HTTP/1.1 200")  # others still served
        finally:
            for connection in [*silent, *partial, kept]:
                connection.close()


def test_connections_beyond_the_limit_are_answered_503() -> None:
    with _serving(Limits(concurrency=4)) as address:
        held = [socket.create_connection(address, timeout=5) for _ in range(4)]
        try:
            time.sleep(0.2)
            assert _get_health(address).startswith(b"HTTP/1.1 503")
        finally:
            for connection in held:
                connection.close()
        time.sleep(0.2)
        assert _get_health(address).startswith(b"HTTP/1.1 200")


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _answer_or_close(connection: socket.socket, seconds: float) -> bytes | None:
    """What the server answers within ``seconds`` (b"" if it closed without a word), or
    None if it neither answers nor closes."""
    connection.settimeout(seconds)
    answer = b""
    try:
        while chunk := connection.recv(4096):
            answer += chunk
    except TimeoutError:
        return answer or None
    except ConnectionResetError:
        pass
    return answer


def _headers(size: int) -> bytes:
    line = b"X-a: " + b"a" * 1000 + b"\r\n"
    return line * (size // len(line))


def test_a_request_head_too_large_is_refused_without_being_kept() -> None:
    """Headers beyond the head limit (64 KiB): 431 and a close at once, not the head
    kept until its deadline (httptools keeps every header: 150 MiB from one connection
    in 0.5 s before the limit); a head of 8 KiB is served."""
    with _serving(Limits()) as address:
        with socket.create_connection(address, timeout=5) as normal:
            normal.sendall(
                b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + _headers(8 << 10)
                + b"\r\n"
            )
            assert (_answer_or_close(normal, 5) or b"").startswith(b"HTTP/1.1 200")

        with socket.create_connection(address, timeout=5) as large:
            with contextlib.suppress(OSError):  # the server may close before the end
                large.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + _headers(1 << 20))
            began = time.monotonic()
            answer = _answer_or_close(large, 3)
            assert answer is not None, "the connection is kept (until the head deadline)"
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
            assert time.monotonic() - began < 2

        # Four connections offering 16 MiB of headers each: the server keeps none of it.
        payload = b"GET /health HTTP/1.1\r\nHost: x\r\n" + _headers(16 << 20)
        before = _rss()
        connections = [socket.create_connection(address, timeout=5) for _ in range(4)]
        try:
            for connection in connections:
                with contextlib.suppress(OSError):
                    connection.sendall(payload)
            time.sleep(0.2)
            grown = _rss() - before
        finally:
            for connection in connections:
                connection.close()
        assert grown < 8 << 20, f"the RSS grew by {grown >> 20} MiB"
        assert _get_health(address).startswith(b"HTTP/1.1 200")
