"""``confide serve sms`` stopped as an orchestrator stops it: SIGTERM (or ^C) is a clean
shutdown, exit 0, and one line that says so."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIDE
from tests.integration.sms_server import free_port


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_sms_cleanly_with_one_line(tmp_path: Path, stop: signal.Signals) -> None:
    port = free_port()
    server = subprocess.Popen(
        [*CONFIDE, "serve", "sms", "--port", str(port)],
        env={**os.environ, "CONFIDE_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/v1/info", timeout=2).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, "did not start"
                time.sleep(0.05)
        server.send_signal(stop)
        stdout, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, stderr
    started, *after = stderr.splitlines()
    assert started.startswith("sms ") and f"127.0.0.1:{port}" in started
    # The token key's fingerprint, what `confide sms trust URL --fingerprint` pins.
    x = info["jwks"]["keys"][0]["x"]
    public = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    assert f"token key fingerprint {hashlib.sha256(public).hexdigest()} " in started
    assert "no hub (only records pushed to this sms are known)" in started
    assert len(after) == 1, stderr
    assert after[0].startswith(f"sms stopped on {stop.name} after ")
    assert after[0].endswith("shut down cleanly")
    assert stdout == ""
