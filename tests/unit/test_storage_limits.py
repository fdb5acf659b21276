"""confide.web.limits for a route that streams its body (the storage's blob upload): the
signature headers are still checked first, but the body is neither counted in the
budget nor cut at max_body, and it is timed per read (idle), not as a whole."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
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


async def _count(request: Request) -> JSONResponse:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return JSONResponse({"length": total})


def _app(limits: Limits) -> BodyLimits:
    inner = Router([Route(path, _count, methods=["PUT"]) for path in ("/blob/{d}", "/small")])
    return BodyLimits(
        inner,
        clock=lambda: NOW,
        unsigned_bodies=lambda path: False,
        streamed_bodies=path_patterns("/blob/{d}"),
        limits=limits,
    )


async def _call(
    app: BodyLimits, path: str, chunks: list[bytes], delays: list[float], signed: bool = True
) -> tuple[int, dict[str, Any]]:
    size = sum(len(chunk) for chunk in chunks)
    headers = {"content-length": str(size)}
    if signed:
        headers |= sign_request(WALLET, audience="t", method="PUT", path=path, now=NOW)
    pending = list(zip(chunks, delays, strict=True))
    answer: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        if not pending:
            await asyncio.Event().wait()
        chunk, delay = pending.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message.get("body"):
            answer["body"] = json.loads(message["body"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    return answer["status"], answer.get("body", {})


def test_a_streamed_body_is_not_cut_at_max_body_nor_counted_in_the_budget() -> None:
    limits = Limits(budget=4096, max_body=1024)
    app = _app(limits)
    chunks = [b"x" * 4000] * 5  # 20,000 bytes: past max_body and the whole budget
    status, body = asyncio.run(_call(app, "/blob/ab", chunks, [0.0] * 5))
    assert (status, body) == (200, {"length": 20_000})
    assert app.buffered == 0


def test_a_streamed_body_has_no_whole_body_deadline_but_an_idle_one() -> None:
    limits = Limits(read_timeout=0.3, idle_timeout=0.5)
    app = _app(limits)
    # 8 reads 0.1 s apart: 0.8 s in all, past read_timeout, never idle for 0.5 s
    status, body = asyncio.run(_call(app, "/blob/ab", [b"y" * 10] * 8, [0.1] * 8))
    assert (status, body) == (200, {"length": 80})
    status, body = asyncio.run(_call(app, "/blob/ab", [b"y" * 10] * 2, [0.0, 1.0]))
    assert status == 408
    assert "no byte of the body arrived for 0.5 s" in body["detail"]
    # a route that holds its body keeps the whole-body deadline
    status, body = asyncio.run(_call(app, "/small", [b"z" * 10] * 8, [0.1] * 8))
    assert status == 408


def test_a_streamed_route_still_needs_the_signature_headers_first() -> None:
    status, body = asyncio.run(_call(_app(Limits()), "/blob/ab", [b"x"], [0.0], signed=False))
    assert status == 401
    assert "is missing" in body["detail"]


def test_the_idle_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(idle_timeout=0)
