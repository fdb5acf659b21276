"""``confide serve sms`` and ``confide requester`` as a user types them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIDE, assert_refusal, run_cli
from tests.integration.sms_server import free_port


@pytest.fixture
def sms(tmp_path: Path) -> Iterator[tuple[dict[str, str], subprocess.Popen[str]]]:
    port = free_port()
    env = {
        **os.environ,
        "CONFIDE_HOME": str(tmp_path / "home"),
        "CONFIDE_SMS": f"http://127.0.0.1:{port}",
        "CONFIDE_WALLET_PASSWORD": "pw",
    }
    server = subprocess.Popen(
        [*CONFIDE, "serve", "sms", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr
            time.sleep(0.05)
    try:
        yield env, server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=30)


def test_push_and_check_secrets(sms: tuple[dict[str, str], subprocess.Popen[str]]) -> None:
    env, _ = sms
    assert run_cli("wallet", "create", env=env).returncode == 0
    pushed = run_cli("requester", "push-secret", "x1", "--secret-value", "SECRET-41", env=env)
    assert pushed.stdout.strip() == 'secret "x1" stored (version 1)'
    from_stdin = subprocess.run(
        [*CONFIDE, "requester", "push-secret", "x2", "--json"],
        input="SECRET-42\n",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(from_stdin.stdout) == {"name": "x2", "version": 1}
    assert_refusal(
        run_cli("requester", "push-secret", "x1", "--secret-value", "other", env=env),
        "409",
        "use --update",
    )
    updated = run_cli(
        "requester", "push-secret", "x1", "--secret-value", "v2", "--update", "--json", env=env
    )
    assert json.loads(updated.stdout)["version"] == 2
    checked = run_cli("requester", "check-secret", "x1", env=env)
    assert (checked.returncode, checked.stdout.strip()) == (0, 'secret "x1" is set')
    missing = run_cli("requester", "check-secret", "nope", "--json", env=env)
    assert missing.returncode == 1
    assert json.loads(missing.stdout) == {"name": "nope", "exists": False}
    bad = run_cli("requester", "push-secret", "a/b", "--secret-value", "v", env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    for proc in (pushed, from_stdin, updated, checked, missing, bad):
        assert "SECRET-4" not in proc.stdout + proc.stderr


def test_server_refuses_a_public_bind_without_tls(tmp_path: Path) -> None:
    env = {**os.environ, "CONFIDE_HOME": str(tmp_path)}
    proc = run_cli("serve", "sms", "--host", "0.0.0.0", "--port", "1", env=env)  # noqa: S104 (refused)
    assert_refusal(proc, "--tls-cert", "--behind-tls-proxy")


def test_sigterm_stops_the_server_cleanly(
    sms: tuple[dict[str, str], subprocess.Popen[str]],
) -> None:
    _, server = sms
    server.send_signal(signal.SIGTERM)
    _, stderr = server.communicate(timeout=30)
    assert server.returncode in (0, 143)
    assert "Traceback" not in stderr


SESSION = """\
name: cubic
version: "1"
predecessor: PRED
services:
  - name: app
    measurements: ["sim:$SIM"]
    command: python3 /app/app.py
    environment: {API_KEY: "$$confide:secrets:api_key$$"}
    volumes: [input]
volumes:
  - name: input
secrets:
  - {name: api_key, value: "SESSION-SECRET-9"}
security: {tolerate: [simulation]}
"""


def test_sessions_create_show_update_history(
    tmp_path: Path, sms: tuple[dict[str, str], subprocess.Popen[str]]
) -> None:
    env, _ = sms
    assert run_cli("wallet", "create", env=env).returncode == 0
    file = tmp_path / "cubic.yml"
    file.write_text(SESSION.replace("PRED", "null"))
    var = ("--var", "SIM=" + "ab" * 32)
    created = run_cli("session", "create", file, *var, "--json", env=env)
    assert created.returncode == 0, created.stderr
    first = json.loads(created.stdout)
    shown = json.loads(run_cli("session", "show", "cubic", "--json", env=env).stdout)
    assert shown["hash"] == first["hash"]
    assert shown["volumes"] == [
        {"name": "input", "mode": "input", "path": "/encryptedInputs", "tag": None}
    ]
    as_yaml = run_cli("session", "show", "cubic", env=env).stdout
    assert "name: cubic" in as_yaml
    stale = tmp_path / "stale.yml"
    stale.write_text(SESSION.replace("PRED", "0" * 64).replace("app.py", "v2.py"))
    assert_refusal(run_cli("session", "update", stale, *var, env=env), "409", first["hash"])
    file.write_text(SESSION.replace("PRED", first["hash"]).replace("app.py", "v2.py"))
    updated = json.loads(run_cli("session", "update", file, *var, "--json", env=env).stdout)
    history = json.loads(run_cli("session", "history", "cubic", "--json", env=env).stdout)
    assert [h["hash"] for h in history["history"]] == [first["hash"], updated["hash"]]
    outputs = [created.stdout, created.stderr, as_yaml, json.dumps(shown), json.dumps(history)]
    assert not any("SESSION-SECRET-9" in text for text in outputs)


def test_session_errors(tmp_path: Path, sms: tuple[dict[str, str], subprocess.Popen[str]]) -> None:
    env, _ = sms
    assert run_cli("wallet", "create", env=env).returncode == 0
    file = tmp_path / "bad.yml"
    file.write_text(SESSION.replace("PRED", "null").replace("command:", "comand:"))
    assert_refusal(
        run_cli("session", "create", file, "--var", "SIM=" + "ab" * 32, env=env),
        f"{file}:7",
        "unknown field 'comand'",
    )
    file.write_text(SESSION.replace("PRED", "null"))
    assert_refusal(run_cli("session", "create", file, env=env), "$SIM is not set")
    other = {**env, "CONFIDE_HOME": str(tmp_path / "other")}
    assert run_cli("wallet", "create", env=other).returncode == 0
    assert run_cli("session", "create", file, "--var", "SIM=" + "ab" * 32, env=env).returncode == 0
    owner = json.loads(run_cli("wallet", "show", "--json", env=env).stdout)["address"]
    hidden = run_cli("session", "show", "cubic", "--owner", owner, env=other)
    assert_refusal(hidden, "403", "that you may read")
    missing = run_cli("session", "show", "nope", "--owner", owner, env=other)
    # existence does not leak (the error lines; a first contact may also note the pinning)
    assert _error_line(hidden).replace("cubic", "nope") == _error_line(missing)


def test_session_update_cannot_flip_a_volume_mode(
    tmp_path: Path, sms: tuple[dict[str, str], subprocess.Popen[str]]
) -> None:
    """An input volume (its key and tag pushed by the owner) cannot become an output
    volume (whose key and tag go to the enclave that writes it)."""
    env, _ = sms
    assert run_cli("wallet", "create", env=env).returncode == 0
    file = tmp_path / "cubic.yml"
    file.write_text(SESSION.replace("PRED", "null"))
    var = ("--var", "SIM=" + "ab" * 32)
    created = json.loads(run_cli("session", "create", file, *var, "--json", env=env).stdout)
    flipped = SESSION.replace("PRED", created["hash"]).replace(
        "  - name: input\n", "  - {name: input, mode: output}\n"
    )
    assert flipped != SESSION.replace("PRED", created["hash"])
    file.write_text(flipped)
    assert_refusal(
        run_cli("session", "update", file, *var, env=env),
        "volume 'input'",
        "is an input volume",
        "cannot change to output",
    )
    shown = json.loads(run_cli("session", "show", "cubic", "--json", env=env).stdout)
    assert shown["hash"] == created["hash"]


def test_the_help_example_creates_a_session(
    tmp_path: Path, sms: tuple[dict[str, str], subprocess.Popen[str]]
) -> None:
    """The minimal session `session create --help` shows is accepted as a user copies it."""
    env, _ = sms
    assert run_cli("wallet", "create", env=env).returncode == 0
    shown = run_cli("session", "create", "--help", env={**env, "COLUMNS": "100"}).stdout
    lines = [line[1:].rstrip() for line in shown.splitlines()]  # rich indents by one space
    start = lines.index("name: hello")
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("tolerate:"))
    example = "\n".join(lines[start : end + 1]).replace("<64 hex>", "ab" * 32)
    file = tmp_path / "hello.yml"
    file.write_text(example + "\n")
    created = run_cli("session", "create", file, "--json", env=env)
    assert created.returncode == 0, (example, created.stderr)
    session = json.loads(created.stdout)
    assert session["services"][0]["command"] == "python3 app.py"
    assert session["security"]["tolerate"] == ["simulation"]  # rich markup did not eat it


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
