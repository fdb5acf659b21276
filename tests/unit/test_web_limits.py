"""The HTTP edge's body limits (confide.web.limits), driven as ASGI: which bodies are
refused before a byte is read, the shared budget, the read deadline."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.web.limits import BodyLimits, Limits, path_patterns

NOW = 1_800_000_000
WALLET = Wallet.generate()


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"length": len(await request.body())})


def _app(limits: Limits) -> BodyLimits:
    # A router, as inside a Starlette app's error middleware (where create_app puts it).
    inner = Router(
        [Route(path, _echo, methods=["GET", "POST", "PUT"]) for path in ("/signed", "/open")]
    )
    return BodyLimits(
        inner, clock=lambda: NOW, unsigned_bodies=path_patterns("/open"), limits=limits
    )


@dataclass
class Exchange:
    """One request's answer, and how many times the app asked for the body."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    reads: int = 0


def _signed(body: bytes, now: int = NOW) -> dict[str, str]:
    return sign_request(WALLET, audience="test", method="PUT", path="/signed", body=body, now=now)


async def _call(
    app: BodyLimits,
    path: str,
    headers: dict[str, str],
    chunks: list[bytes],
    *,
    method: str = "PUT",
    hang: bool = False,
    disconnect: bool = False,
) -> Exchange:
    """``chunks`` arrive one per read; then the body ends, or never does (``hang``), or
    the client goes away (``disconnect``)."""
    exchange = Exchange()
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        exchange.reads += 1
        if pending:
            chunk = pending.pop(0)
            return {
                "type": "http.request",
                "body": chunk,
                "more_body": bool(pending) or hang or disconnect,
            }
        if disconnect:
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # never: the rest of the body does not come
        raise AssertionError

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message.get("body"):
            exchange.body = json.loads(message["body"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return exchange


def _run(work: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(work, 10)

    return asyncio.run(bounded())


def test_a_signed_body_with_good_headers_is_read() -> None:
    body = b"x" * 1000
    headers = {**_signed(body), "content-length": "1000"}
    answer = _run(_call(_app(Limits()), "/signed", headers, [body[:400], body[400:]]))
    assert (answer.status, answer.body) == (200, {"length": 1000})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"X-Confide-Signature": None}, "header X-Confide-Signature is missing"),
        ({"X-Confide-Address": "0x12"}, "is not a wallet address"),
        ({"X-Confide-Timestamp": str(NOW - 301)}, "off the server's clock"),
        ({"X-Confide-Nonce": "00"}, "32 lower-case hex"),
        ({"X-Confide-Signature": "0x1234"}, "65 bytes"),
    ],
)
def test_a_signed_route_refuses_bad_headers_before_reading_the_body(
    change: dict[str, str | None], reason: str
) -> None:
    headers = {**_signed(b"x" * 500), "content-length": "500"}
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    answer = _run(_call(_app(Limits()), "/signed", headers, [], hang=True))
    assert answer.status == 401 and reason in answer.body["detail"]
    assert answer.reads == 0  # not a byte of the body was read
    assert answer.headers["connection"] == "close"
    assert answer.headers["content-type"] == "application/problem+json"


def test_unsigned_routes_and_bodiless_requests_pass() -> None:
    app = _app(Limits())
    opened = _run(_call(app, "/open", {"content-length": "3"}, [b"abc"]))
    assert (opened.status, opened.body) == (200, {"length": 3})
    fetched = _run(_call(app, "/signed", {}, [b""], method="GET"))
    assert fetched.status == 200
    empty = _run(_call(app, "/signed", {"content-length": "0"}, [b""]))
    assert empty.status == 200  # no body, nothing to sign before the app's own check


def test_a_body_is_cut_at_the_largest_when_a_route_reads_on() -> None:
    app = _app(Limits(max_body=1000, budget=4000))
    long = _run(_call(app, "/open", {"content-length": "1200"}, [b"x" * 600, b"x" * 600]))
    assert long.status == 413 and "at most 1000 bytes" in long.body["detail"]
    assert app.buffered == 0


def test_a_body_without_a_content_length_is_411_before_it_is_read() -> None:
    """A chunked body would hold ``max_body`` of the budget whatever its route's limit
    (64 of them, on a route without signatures, held all of it): refused unread."""
    app = _app(Limits(max_body=1000, budget=4000))
    for path, headers in [
        ("/open", {"transfer-encoding": "chunked"}),
        ("/signed", {"transfer-encoding": "chunked", **_signed(b"x" * 600)}),
        ("/open", {"transfer-encoding": "chunked", "content-length": "600"}),
    ]:
        answer = _run(_call(app, path, headers, [b"x" * 600] * 2, hang=True))
        assert (answer.status, answer.reads) == (411, 0), (path, answer)
        assert "Content-Length is required" in answer.body["detail"]
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["connection"] == "close"
    assert app.buffered == 0


def test_bodies_share_a_budget_and_give_it_back() -> None:
    app = _app(Limits(budget=1000, max_body=600, read_timeout=0.5))

    async def scenario() -> tuple[Exchange, Exchange, Exchange]:
        held = asyncio.ensure_future(
            _call(app, "/open", {"content-length": "600"}, [b"x" * 100], hang=True)
        )
        await asyncio.sleep(0.05)
        assert app.buffered == 600
        refused = await _call(app, "/open", {"content-length": "500"}, [], hang=True)
        fits = await _call(app, "/open", {"content-length": "400"}, [b"y" * 400])
        return await held, refused, fits

    held, refused, fits = _run(scenario())
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    assert (refused.reads, fits.status) == (0, 200)
    assert held.status == 408
    assert app.buffered == 0


def test_a_body_that_does_not_arrive_in_time_is_408() -> None:
    app = _app(Limits(read_timeout=0.3))
    began = time.monotonic()
    answer = _run(_call(app, "/open", {"content-length": "100"}, [b"x" * 10], hang=True))
    assert answer.status == 408 and "0.3 s" in answer.body["detail"]
    assert 0.25 < time.monotonic() - began < 3
    assert answer.headers["connection"] == "close"


def test_a_client_gone_mid_body_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    answer = _run(
        _call(_app(Limits()), "/open", {"content-length": "100"}, [b"x" * 10], disconnect=True)
    )
    assert answer.status == 0  # nobody to answer
    lines = [r for r in caplog.records if r.name == "confide.web"]
    assert len(lines) == 1 and "went away" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_path_patterns_match_whole_segments() -> None:
    match: Callable[[str], bool] = path_patterns("/v1/attest", "/v1/s/{owner}/{name}/tags")
    assert match("/v1/attest") and match("/v1/s/0xab/cubic/tags")
    assert not match("/v1/attest/x") and not match("/v1/s/0xab/tags")
    assert not match("/v1/s/a/b/c/tags") and not match("/v1/attestx")


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_body"):
        Limits(budget=10, max_body=20)
    with pytest.raises(ValueError, match="positive"):
        Limits(read_timeout=0)
    with pytest.raises(ValueError, match="max_head_bytes"):
        Limits(max_head_bytes=100)
