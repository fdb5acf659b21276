"""The worker against the embedded platform, with a fake runtime (its claim, lease,
download, job directory, relay, upload and report logic): a task runs to COMPLETED with
its result document and times, failures carry their cause, a runtime that leaves no
report or links its output elsewhere fails the task, and only pool members on an sms
that accepts simulation may work."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.client.deploy import change_members, deploy_workerpool
from confide.client.storage import StorageClient
from confide.crypto.wallet import Wallet
from confide.hub.lifecycle import CHAIN
from confide.worker import WorkerError, run_worker
from tests.integration.sms_server import running_sms
from tests.integration.test_worker_support import (
    Pool,
    Up,
    fake_runner,
    read_job,
    running_up,
    start_worker,
    worker_config,
)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up"), lease_seconds=3) as started:
        yield started


@pytest.fixture
def pool(up: Up) -> Pool:
    return Pool(up).deploy()


def test_a_task_runs_to_completion(pool: Pool, tmp_path: Path) -> None:
    task = pool.queue()
    traces = tmp_path / "traces"
    home = tmp_path / "worker"
    worker = start_worker(worker_config(pool, home, job_extra={"trace": str(traces)}))
    view = pool.wait(task, {"COMPLETED", "FAILED", "TIMEOUT"})
    outcomes = worker.finish()
    assert not worker.errors
    assert view["status"] == "COMPLETED", view
    assert [(o.task, o.status) for o in outcomes] == [(task, "COMPLETED")]
    assert list(view["times"]) == list(CHAIN)
    result = view["result"]
    assert view["result_blob"] == result["blob"] == view["result_digest"]
    assert result["logs_blob"] and result["signature"] == "ab" * 64
    assert result["statement"]["task_id"] == task and result["token"]
    assert {"claim_to_start", "sandbox", "attest", "app", "upload"} <= set(result["timings"])
    assert "Bad Name" not in result["timings"]  # the runtime's, filtered as the hub keeps them
    seen = read_job(traces / f"{task}.json")
    job = seen["job"]
    assert job["format"] == "confide-job-v1" and job["task"] == task
    assert job["worker"] == pool.worker.address and job["tee"] == "sim"
    assert seen["has_platform_key"] and job["app_logs"] is True
    assert job["sms_url"] == f"{pool.up.base}/sms"
    assert job["storage_url"] == f"{pool.up.base}/storage"
    assert job["order"]["app"] == pool.app and job["deadline"] == view["deadline"]
    assert job["relay_fd"] > 2 and job["allow_loopback_inputs"] is False
    assert job["lease_token"] and job["signature"] == view["signature"]
    assert job["limits"] == {"memory_bytes": 2 << 30, "tmpfs_bytes": 256 << 20}
    assert seen["job_mode"] == 0o700 and {"bundle.tar", "job.json"} <= set(seen["files"])
    assert seen["bundle_size"] > 0
    assert list((home / "jobs").iterdir()) == []  # each job directory is removed
    key = home / "sim-platform-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # the requester reads the result with the hub's grants; nobody else's grant works
    hub = pool.up.platform(pool.requester, "r").hub
    grants = hub.task_grants(task)
    storage = StorageClient(f"{pool.up.base}/storage", wallet=pool.requester)
    size = storage.download(result["blob"], tmp_path / "result.zip", grant=grants["result"])
    assert size > 0 and (tmp_path / "result.zip").read_bytes().startswith(b"PK-ciphertext-")
    storage.download(result["logs_blob"], tmp_path / "logs.sealed", grant=grants["logs"])


def test_a_failed_app_reports_its_cause(pool: Pool, tmp_path: Path) -> None:
    task = pool.queue()
    worker = start_worker(worker_config(pool, tmp_path / "w", runner=fake_runner("fail")))
    view = pool.wait(task, {"COMPLETED", "FAILED", "TIMEOUT"})
    worker.finish()
    assert view["status"] == "FAILED" and view["cause"] == "APP_COMPUTE_FAILED"
    assert view["result"]["error"] == "the app exited 3"
    assert view["result"]["blob"] and view["result"]["logs_blob"]  # error.txt, sealed
    assert "COMPUTING" in view["times"] and "FAILED" in view["times"]
    assert pool.up.platform(pool.requester, "r").hub.task_grants(task)["result"]


def test_a_runtime_without_report_fails_the_task(pool: Pool, tmp_path: Path) -> None:
    task = pool.queue()
    worker = start_worker(worker_config(pool, tmp_path / "w", runner=fake_runner("crash")))
    view = pool.wait(task, {"COMPLETED", "FAILED", "TIMEOUT"})
    worker.finish()
    assert view["status"] == "FAILED" and view["cause"] == "PRE_COMPUTE_FAILED"
    assert "ended without a report (exit)" in view["result"]["error"]


def test_an_output_linked_elsewhere_is_not_uploaded(pool: Pool, tmp_path: Path) -> None:
    task = pool.queue()
    worker = start_worker(worker_config(pool, tmp_path / "w", runner=fake_runner("symlink")))
    view = pool.wait(task, {"COMPLETED", "FAILED", "TIMEOUT"})
    worker.finish()
    assert view["status"] == "FAILED" and view["cause"] == "RESULT_UPLOAD_FAILED"
    assert "result.zip is missing" in view["result"]["error"]  # O_NOFOLLOW: never followed
    assert view["result"]["blob"] is None


def test_concurrency_runs_every_task_once(pool: Pool, tmp_path: Path) -> None:
    tasks = [pool.queue() for _ in range(4)]
    worker = start_worker(worker_config(pool, tmp_path / "w", concurrency=2))
    views = [pool.wait(task, {"COMPLETED", "FAILED", "TIMEOUT"}) for task in tasks]
    outcomes = worker.finish()
    assert [v["status"] for v in views] == ["COMPLETED"] * 4
    assert sorted(o.task for o in outcomes) == sorted(tasks)
    assert all(v["attempts"] == 1 for v in views)


def test_each_prewarmed_runtime_runs_exactly_one_task(pool: Pool, tmp_path: Path) -> None:
    """Each task runs in a runtime started before its claim, in a job directory of its
    own; no runtime and no directory serves two tasks."""
    traces, started = tmp_path / "traces", list[int]()
    config = worker_config(
        pool, tmp_path / "w", runner=fake_runner(started=started), job_extra={"trace": str(traces)}
    )
    worker = start_worker(config)
    tasks = []
    for _ in range(3):  # one after the other: each claim finds the next runtime waiting
        tasks.append(pool.queue())
        assert pool.wait(tasks[-1], {"COMPLETED", "FAILED", "TIMEOUT"})["status"] == "COMPLETED"
    deadline = time.monotonic() + 10
    while len(started) < 4:  # the next one is started as soon as a task has ended
        assert time.monotonic() < deadline, started
        time.sleep(0.05)
    waiting = started[3]
    outcomes = worker.finish()
    assert [o.status for o in outcomes] == ["COMPLETED"] * 3
    seen = [read_job(traces / f"{task}.json") for task in tasks]
    assert [s["pid"] for s in seen] == started[:3]  # in the order they were started
    assert len({s["dir"] for s in seen}) == 3
    assert waiting not in [s["pid"] for s in seen]
    for view in (pool.task(task) for task in tasks):  # its start is off the critical path
        assert view["result"]["timings"]["sandbox"] < 0.5


def test_a_worker_stopped_while_a_runtime_waits_leaves_nothing(pool: Pool, tmp_path: Path) -> None:
    """No task comes: the pre-warmed runtime is told there is no job when the worker
    stops, its process is gone and its job directory removed."""
    started = list[int]()
    home = tmp_path / "w"
    worker = start_worker(worker_config(pool, home, runner=fake_runner(started=started)))
    deadline = time.monotonic() + 30
    while not started or not list((home / "jobs").glob("job-*")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # it has asked the relay for its job by now, and waits
    began = time.monotonic()
    assert worker.finish() == [] and not worker.errors
    assert time.monotonic() - began < 5  # no task waited for
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert list((home / "jobs").iterdir()) == []


def test_a_non_member_is_refused(pool: Pool, tmp_path: Path) -> None:
    stranger = Pool(pool.up)  # its own wallets, not in pool's record
    config = worker_config(pool, tmp_path / "w", wallet=stranger.worker)
    with pytest.raises(WorkerError, match="is not a member of workerpool"):
        run_worker(config, threading.Event())


def test_a_removed_member_stops(pool: Pool, tmp_path: Path) -> None:
    owner = Wallet.generate()  # a pool owned by another wallet, the worker a member
    platform = pool.up.platform(owner, "o")
    signed, _ = deploy_workerpool(platform, owner, "shared", None)
    shared = signed.record.address
    change_members(platform, owner, shared, add=pool.worker.address)
    started = threading.Event()
    config = worker_config(pool, tmp_path / "w", pool=shared, on_start=lambda _: started.set())
    worker = start_worker(config)
    assert started.wait(30)
    change_members(platform, owner, shared, remove=pool.worker.address)
    worker.thread.join(30)
    assert not worker.thread.is_alive()
    assert worker.errors and "refused this worker's claim" in str(worker.errors[0])
    assert "is not a member of workerpool" in str(worker.errors[0])


def test_a_sim_worker_needs_an_sms_that_accepts_sim(pool: Pool, tmp_path: Path) -> None:
    with running_sms(tmp_path / "sms", f"sqlite:///{tmp_path / 'sms.db'}") as sms:
        config = worker_config(pool, tmp_path / "w", sms_url=sms)
        with pytest.raises(WorkerError, match="does not accept simulation evidence"):
            run_worker(config, threading.Event())


def test_the_runtime_is_killed_at_the_deadline(pool: Pool, tmp_path: Path) -> None:
    """The pre-warmed sandbox's wall is generous: the task's own deadline (plus the
    reserve) is enforced by cancelling its run, the whole tree killed."""
    from confide.client.hub import HubClient
    from confide.worker.job import run_task
    from confide.worker.loop import _services
    from confide.worker.runner import WALL_RESERVE_SECONDS

    task = pool.queue()
    started = list[int]()
    config = worker_config(
        pool, tmp_path / "w", runner=fake_runner("slow", started), job_extra={"fake_sleep": 120}
    )
    services = _services(config)
    hub = HubClient(pool.up.base, wallet=pool.worker)
    claim = hub.claim(pool.address)
    hub.close()
    assert claim is not None and claim["task"]["task"] == task
    claim["task"]["deadline"] = int(time.time() + 1.5 - WALL_RESERVE_SECONDS)  # in ~1.5 s
    began = time.monotonic()
    outcome = run_task(services, claim)
    assert time.monotonic() - began < 20
    assert (outcome.status, outcome.cause) == ("FAILED", "APP_COMPUTE_TIMEOUT")
    assert "ended without a report (deadline)" in str(outcome.error)
    with pytest.raises(ProcessLookupError):
        os.kill(started[0], 0)
    assert list((tmp_path / "w" / "jobs").iterdir()) == []
