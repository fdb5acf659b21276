"""``confide serve sms`` and its database, as an operator meets them: an unreachable
database at start, and a server killed after acknowledging writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import CONFIDE, assert_refusal, run_cli
from tests.integration.sms_server import free_port

VALUES = ("KILLED-SERVER-SECRET-1", "KILLED-SERVER-SECRET-2")


def test_serve_sms_refuses_an_unreachable_database(tmp_path: Path) -> None:
    env = {**os.environ, "CONFIDE_HOME": str(tmp_path / "home")}
    port = str(free_port())
    closed = f"postgresql://confide:hunter2@127.0.0.1:{free_port()}/test"
    refused = run_cli("serve", "sms", "--port", port, "--db", closed, env=env)
    assert_refusal(refused, "cannot reach the database", "127.0.0.1", "Connection refused")
    assert "hunter2" not in refused.stderr
    nowhere = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'sms.db'}"
    assert_refusal(
        run_cli("serve", "sms", "--port", port, "--db", nowhere, env=env),
        "cannot reach the database",
        "unable to open database file",
    )


def _serve(env: dict[str, str], port: int, db: list[str]) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [*CONFIDE, "serve", "sms", "--port", str(port), *db],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            return server
        except httpx.HTTPError:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr
            time.sleep(0.05)


def test_a_killed_server_loses_nothing_acknowledged(tmp_path: Path, database_url: str) -> None:
    """SIGKILL right after the acknowledgements: no graceful shutdown, no flush."""
    port = free_port()
    env = {
        **os.environ,
        "CONFIDE_HOME": str(tmp_path / "home"),
        "CONFIDE_SMS": f"http://127.0.0.1:{port}",
        "CONFIDE_WALLET_PASSWORD": "pw",
    }
    # SQLite: the default database under $CONFIDE_HOME, which `audit` then finds by itself.
    db = [] if database_url.startswith("sqlite") else ["--db", database_url]
    assert run_cli("wallet", "create", env=env).returncode == 0
    server = _serve(env, port, db)
    try:
        for name, value in zip(("x1", "x2"), VALUES, strict=True):
            pushed = run_cli("requester", "push-secret", name, "--secret-value", value, env=env)
            assert pushed.returncode == 0, pushed.stderr
    finally:
        server.send_signal(signal.SIGKILL)
        server.communicate(timeout=30)
    server = _serve(env, port, db)
    try:
        for name in ("x1", "x2"):
            checked = run_cli("requester", "check-secret", name, env=env)
            assert (checked.returncode, checked.stdout.strip()) == (0, f'secret "{name}" is set')
        again = run_cli("requester", "push-secret", "x1", "--secret-value", "v", env=env)
        assert_refusal(again, "409")  # the first value is still there: create-only refuses
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    verified = run_cli("audit", "verify", *db, "--json", env=env)
    assert json.loads(verified.stdout)["ok"] is True
    assert json.loads(verified.stdout)["entries"] == 2
    table = run_cli("audit", "show", *db, env=env)
    listed = run_cli("audit", "show", *db, "--json", env=env)
    assert [e["subject"] for e in json.loads(listed.stdout)] == ["requester/x1", "requester/x2"]
    for value in VALUES:
        assert value not in table.stdout + listed.stdout
