"""The server every service runs under (confide.web.server): connections that never
finish a request's head are closed, and connections beyond the limit are answered 503."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

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
