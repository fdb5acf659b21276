"""Liveness and readiness (confide.web.health): /ready follows the database, in bounded
time, with one probe at a time however many checks arrive."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette

from confide.db import make_engine
from confide.web.health import Health, database_probe

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def _with_client(health: Health, scenario: Scenario) -> None:
    """``scenario`` on one event loop (the probe under way belongs to it)."""

    async def run() -> None:
        transport = httpx.ASGITransport(app=Starlette(routes=health.routes()))
        async with httpx.AsyncClient(transport=transport, base_url="http://sms") as client:
            await asyncio.wait_for(scenario(client), 10)

    try:
        asyncio.run(run())
    finally:
        health.close()


def test_ready_when_the_database_answers(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/health")).json() == {"status": "ok"}

    try:
        _with_client(Health(database_probe(engine)), scenario)
    finally:
        engine.dispose()


def test_unready_when_the_database_fails() -> None:
    def unreachable() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.get("/ready")
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "1"
        assert "does not answer (ConnectionRefusedError)" in answer.json()["detail"]
        assert (await client.get("/health")).status_code == 200  # liveness, not readiness

    _with_client(Health(unreachable), scenario)


def test_a_hanging_database_is_unready_in_bounded_time_and_holds_one_thread() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hangs() -> None:
        calls.append(1)
        release.wait(10)

    async def scenario(client: httpx.AsyncClient) -> None:
        try:
            began = time.monotonic()
            first, second = await asyncio.gather(client.get("/ready"), client.get("/ready"))
            third = await client.get("/ready")
            assert [a.status_code for a in (first, second, third)] == [503, 503, 503]
            assert "did not answer within 0.2 s" in first.json()["detail"]
            assert time.monotonic() - began < 2
            assert len(calls) == 1  # the other checks waited on the probe under way
        finally:
            release.set()
            await asyncio.sleep(0.1)
        assert (await client.get("/ready")).status_code == 200  # a new probe answers
        assert len(calls) == 2

    _with_client(Health(hangs, timeout=0.2), scenario)
