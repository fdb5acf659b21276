"""A real sms on a free loopback port, in a thread, stopped at the end of the test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import Engine

from confide.sms.http import create_app
from confide.sms.registry import Registry
from confide.sms.service import Sms, SmsConfig


def audience_of(base: str) -> str:
    """The audience a signed request to the sms at ``base`` names (its ``/v1/info``)."""
    audience: str = httpx.get(base + "/v1/info").json()["audience"]
    return audience


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_sms(
    home: Path,
    db_url: str,
    deployment: str = "test",
    *,
    allow_sim: bool = False,
    registry: Registry | None = None,
    clock: Callable[[], float] = time.time,
    engine: Engine | None = None,
    collateral: Path | None = None,
    token_key: Path | None = None,
) -> Iterator[str]:
    config = SmsConfig(
        home=home,
        db_url=db_url,
        deployment_id=deployment,
        allow_sim=allow_sim,
        collateral=collateral,
        token_key_file=token_key,
    )
    sms = Sms(config, engine=engine, registry=registry)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(sms, clock), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the sms did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sms.engine.dispose()
