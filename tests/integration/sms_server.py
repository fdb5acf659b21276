"""A real sms on a free loopback port, in a thread, stopped at the end of the test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from confide.sms.http import create_app
from confide.sms.service import Sms, SmsConfig


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_sms(home: Path, db_url: str, deployment: str = "test") -> Iterator[str]:
    sms = Sms(SmsConfig(home=home, db_url=db_url, deployment_id=deployment))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(sms, time.time), host="127.0.0.1", port=port, log_level="error")
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
