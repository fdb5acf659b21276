"""Worker faults against the embedded platform (3 s leases), with the fake runtime: a
worker killed with SIGKILL mid-task (its lease expires, another worker completes the
task, once), SIGTERM (no new claim, the running task finishes, exit 0), and a worker
holding a stale fencing token after a requeue (its reports are refused, nothing of the
new lease is overwritten), the platform restarted while a task computes (the worker's
reports wait for it; the task completes on its first attempt), and a second SIGTERM
(the worker stops at once and gives the running task's lease back)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.client.deploy import change_members
from confide.client.hub import HubClient
from confide.crypto.wallet import Wallet, load_wallet
from confide.db.audit import entries
from confide.worker.job import run_task
from confide.worker.loop import _services
from tests.conftest import quick_wallet
from tests.integration.sms_server import free_port
from tests.integration.test_worker_support import (
    Pool,
    Up,
    fake_runner,
    running_up,
    serve_up,
    start_worker,
    worker_config,
)

PASSWORD = "worker password"
FINAL = {"COMPLETED", "FAILED", "TIMEOUT"}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up"), lease_seconds=3) as started:
        yield started


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    quick_wallet(tmp_path / "keys", PASSWORD)
    return tmp_path / "keys" / "wallet.json"


@pytest.fixture
def pool(up: Up, keystore: Path) -> Pool:
    return Pool(up, worker=load_wallet(keystore, PASSWORD)).deploy()


def spawn(pool: Pool, keystore: Path, home: Path, mode: str, sleep: float) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.integration.test_worker_support"]
    argv += ["--hub", pool.up.base, "--pool", pool.address, "--keystore", str(keystore)]
    argv += ["--password", PASSWORD, "--home", str(home), "--mode", mode, "--sleep", str(sleep)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started", process.stderr
    return process


def test_a_killed_worker_s_task_is_completed_by_another_once(
    pool: Pool, keystore: Path, tmp_path: Path
) -> None:
    task = pool.queue()
    first = spawn(pool, keystore, tmp_path / "a", "slow", 60)
    try:
        pool.wait(task, {"COMPUTING", *FINAL})
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its runtime, mid-task
        first.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed_lease = pool.task(task)["lease"]
    other = Wallet.generate()
    change_members(pool.up.platform(pool.worker, "w"), pool.worker, pool.address, add=other.address)
    second = start_worker(worker_config(pool, tmp_path / "b", wallet=other))
    view = pool.wait(task, FINAL)
    outcomes = second.finish()
    assert view["status"] == "COMPLETED", view
    assert view["attempts"] == 2 and view["lease"] is None
    assert [(o.task, o.status) for o in outcomes] == [(task, "COMPLETED")]
    assert killed_lease is None or killed_lease["worker"] == pool.worker.address
    with pool.up.embedded.hub.engine.connect() as connection:
        logged = entries(connection)

    reports = [
        e
        for e in logged
        if e.subject == task and e.action == "task.status" and e.detail["to"] == "COMPLETED"
    ]
    assert len(reports) == 1 and reports[0].actor == other.address


def test_sigterm_finishes_the_running_task_and_claims_no_more(
    pool: Pool, keystore: Path, tmp_path: Path
) -> None:
    running = pool.queue()
    waiting = pool.queue()
    worker = spawn(pool, keystore, tmp_path / "a", "slow", 2)
    try:
        pool.wait(running, {"COMPUTING", *FINAL})
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == [[running, "COMPLETED", None]]
    assert pool.task(running)["status"] == "COMPLETED"
    time.sleep(1.5)
    assert pool.task(waiting)["status"] == "RECEIVED"  # not claimed after SIGTERM


def test_a_stale_fencing_token_after_requeue(pool: Pool, tmp_path: Path) -> None:
    task = pool.queue()
    hub = HubClient(pool.up.base, wallet=pool.worker)
    stale = hub.claim(pool.address)
    assert stale is not None and stale["task"]["task"] == task
    deadline = time.monotonic() + 30
    fresh = None
    while fresh is None:  # the lease (3 s) expires, the sweep requeues, we claim again
        assert time.monotonic() < deadline
        fresh = hub.claim(pool.address, wait=2)
    assert fresh["task"]["task"] == task and fresh["lease_token"] != stale["lease_token"]
    services = _services(worker_config(pool, tmp_path / "w"))
    outcome = run_task(services, stale)
    assert outcome.status is None and outcome.error and "stale fencing token" in outcome.error
    view = pool.task(task)
    assert view["status"] == "CLAIMED" and view["lease"]["token"] == fresh["lease_token"]
    assert view["result"] is None and view["attempts"] == 2
    done = hub.report(task, fresh["lease_token"], "FAILED", cause="PRE_COMPUTE_FAILED")
    assert done["status"] == "FAILED"
    hub.close()


def test_the_hub_restarted_mid_run(tmp_path: Path) -> None:
    port = free_port()
    served = serve_up(tmp_path / "up", port, lease_seconds=10)
    try:
        pool = Pool(Up(served.embedded.base_url, tmp_path / "up", served.embedded)).deploy()
        task = pool.queue()
        extra = {"fake_sleep": 2}
        worker = start_worker(
            worker_config(pool, tmp_path / "w", runner=fake_runner("slow"), job_extra=extra)
        )
        pool.wait(task, {"COMPUTING", *FINAL})
        served.stop()  # the whole platform goes away while the app computes …
        time.sleep(3)  # … the runtime ends meanwhile: its report waits for the hub
        served = serve_up(tmp_path / "up", port, lease_seconds=10)
        view = pool.wait(task, FINAL)
        outcomes = worker.finish()
    finally:
        served.stop()
    assert view["status"] == "COMPLETED" and view["attempts"] == 1, view
    assert [(o.task, o.status) for o in outcomes] == [(task, "COMPLETED")]


def test_a_second_sigterm_gives_the_lease_back(keystore: Path, tmp_path: Path) -> None:
    with running_up(tmp_path / "up", lease_seconds=60) as up:  # an expiry would take 60 s
        pool = Pool(up, worker=load_wallet(keystore, PASSWORD)).deploy()
        task = pool.queue()
        worker = spawn(pool, keystore, tmp_path / "a", "slow", 60)
        try:
            pool.wait(task, {"COMPUTING", *FINAL})
            worker.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)  # (its fake runtime, left running, holds the pipes)
            view = pool.wait(task, {"RECEIVED", *FINAL}, timeout=10)
        finally:
            os.killpg(worker.pid, signal.SIGKILL)  # its fake runtime
            worker.communicate(timeout=30)
    assert code == 128 + signal.SIGTERM
    assert view["status"] == "RECEIVED" and view["lease"] is None and view["attempts"] == 1
