"""``confide worker start`` as a user types it, against a ``confide up --workers 0``: it
runs a task of its pool through the real runtime and sandbox, stops at SIGTERM (exit 0,
one JSON document with --json), and refuses a wallet outside the pool or a machine
without TEE hardware when --tee is left out (one ``error:`` line, exit 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confide.worker import detect_tee
from tests.acceptance.test_cli_up_platform import Up, make_bundle, start_up, stop_up
from tests.conftest import assert_refusal

# `confide` with the worker group registered (until cli/main.py lists it)
MAIN = (
    "import sys\n"
    "from confide.cli import main\n"
    "if not any(g[0] == 'worker' for g in main.GROUPS):\n"
    "    main.GROUPS += (('worker', 'confide.cli.worker', 'app'),)\n"
    "sys.exit(main.run(sys.argv[1:]))\n"
)
WORKER = [sys.executable, "-c", MAIN, "worker", "start"]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    started = start_up(tmp_path_factory.mktemp("up"), "--workers", "0")
    try:
        yield started
    finally:
        stop_up(started)


def worker(up: Up, user: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WORKER, *args],
        env=up.env(user),
        cwd=up.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(up: Up, task: str, statuses: set[str], timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, object] = httpx.get(f"{up.url}/v1/tasks/{task}").json()
        if view["status"] in statuses:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def test_a_worker_runs_its_pool_s_task_and_stops_at_sigterm(up: Up) -> None:
    up.wallet("wendy")
    pool = str(up.ok("wendy", "workerpool", "deploy", "farm")["address"])
    up.wallet("rick")
    app = str(up.ok("rick", "app", "deploy", make_bundle(up, "rick", "hello"))["address"])
    task = str(up.ok("rick", "app", "run", app, "--workerpool", pool)["task"])
    process = worker(up, "wendy", "--workerpool", "farm", "--tee", "sim", "--json")
    try:
        view = wait_for(up, task, {"COMPLETED", "FAILED", "TIMEOUT"})
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert view["status"] == "COMPLETED", view
    assert process.returncode == 0, err
    summary = json.loads(out)
    assert summary["workerpool"] == pool and summary["tee"] == "sim"
    assert summary["tasks"] == [{"task": task, "status": "COMPLETED", "cause": None}]
    assert "simulation: it protects nothing" in err and f"task {task}: COMPLETED" in err
    assert "SIGTERM: no new claims" in err
    shown = up.ok("rick", "task", "show", task)
    assert shown.get("status") == "COMPLETED"


def test_a_wallet_outside_the_pool_is_refused(up: Up) -> None:
    up.wallet("mallory")
    process = worker(
        up,
        "mallory",
        "--workerpool",
        f"{up.ok('mallory', 'wallet', 'show')['address']}/none",
        "--tee",
        "sim",
    )
    out, err = process.communicate(timeout=60)
    proc = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert_refusal(proc, "knows no workerpool")
    up.wallet("wendy2")
    pool = str(up.ok("wendy2", "workerpool", "deploy", "farm2")["address"])
    process = worker(up, "mallory", "--workerpool", pool, "--tee", "sim")
    out, err = process.communicate(timeout=60)
    proc = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert_refusal(proc, "is not a member of workerpool", "add-worker")


@pytest.mark.skipif(detect_tee() is not None, reason="this machine has TEE hardware")
def test_no_tee_hardware_needs_tee_sim(up: Up, tmp_path: Path) -> None:
    up.wallet("nora")
    process = worker(up, "nora", "--workerpool", "default")
    out, err = process.communicate(timeout=60)
    proc = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert_refusal(proc, "no TEE hardware found", "pass --tee sim")
