"""The worker for real: ``python -m confide.runtime`` in the sandbox (confide.sandbox.run)
with the relay, against the embedded platform. The cubic app of the seed tutorial gets
its coefficients from the app developer secret and x from a requester secret; the
requester downloads the result, verifies it and reads f(3) = 56. Nothing the worker
keeps (its directory, its job directories, its log lines) holds a secret value or the
plaintext result."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.bundle import measure_bundle
from confide.bundle.scaffold import init_bundle
from confide.sms.release_policy import ReleasePolicy
from tests.integration.test_worker_support import Pool, Up, running_up, start_worker, worker_config

CUBIC = """\
import json
import os
from pathlib import Path

a, b, c, d = (int(v) for v in os.environ["IEXEC_APP_DEVELOPER_SECRET"].split(";"))
x = int(os.environ["IEXEC_REQUESTER_SECRET_1"])
out = Path(os.environ["IEXEC_OUT"])
(out / "result.txt").write_text(f"f({x}) = {a * x**3 + b * x**2 + c * x + d}\\n")
computed = {"deterministic-output-path": str(out / "result.txt")}
(out / "computed.json").write_text(json.dumps(computed))
print("computed")
"""
CUBIC_JS = """\
const fs = require("fs");
const path = require("path");
const [a, b, c, d] = process.env.IEXEC_APP_DEVELOPER_SECRET.split(";").map(Number);
const x = Number(process.env.IEXEC_REQUESTER_SECRET_1);
const out = process.env.IEXEC_OUT;
const result = path.join(out, "result.txt");
fs.writeFileSync(result, `f(${x}) = ${a * x ** 3 + b * x ** 2 + c * x + d}\\n`);
const computed = {"deterministic-output-path": result};
fs.writeFileSync(path.join(out, "computed.json"), JSON.stringify(computed));
"""
DEVELOPER_SECRET = b"2;0;-1;5"
FINAL = {"COMPLETED", "FAILED", "TIMEOUT"}


def _sandbox_works() -> str | None:
    try:
        from confide.sandbox import backend

        backend()
    except Exception as exc:  # no sandbox here: the real run cannot be shown
        return str(exc)
    return None


@pytest.fixture(scope="module", params=["python", "node"])
def up(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    why = _sandbox_works()
    if why is not None:
        pytest.skip(f"no working sandbox: {why}")
    if request.param == "node" and shutil.which("node") is None:
        pytest.skip("no node here")
    root = tmp_path_factory.mktemp("up")
    bundle = root / "bundle"
    init_bundle(bundle, request.param, "cubic")
    if request.param == "python":
        (bundle / "app.py").write_text(CUBIC)
    else:
        (bundle / "app.js").write_text(CUBIC_JS)
    with running_up(root) as started:
        yield started


def test_a_real_task_through_the_sandbox(
    up: Up, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="confide.worker")
    pool = Pool(up).deploy()
    measurement = measure_bundle(up.root / "bundle")
    developer = up.platform(pool.developer, "d")
    developer.sms.push_app_secret(
        pool.app, DEVELOPER_SECRET, policy=ReleasePolicy(apps=frozenset({measurement}))
    )
    up.platform(pool.requester, "r").sms.push_requester_secret("x1", b"3")
    task = pool.queue(secrets=((1, "x1"),))
    home = tmp_path / "worker"
    began = time.monotonic()
    worker = start_worker(worker_config(pool, home, runner=None))
    view = pool.wait(task, FINAL, timeout=120)
    outcomes = worker.finish()
    assert not worker.errors, worker.errors
    assert view["status"] == "COMPLETED", (view["cause"], view["result"])
    assert [(o.task, o.status) for o in outcomes] == [(task, "COMPLETED")]
    assert list(view["times"])[-1] == "COMPLETED" and "COMPUTING" in view["times"]
    assert view["result"]["statement"]["task_id"] == task
    assert time.monotonic() - began < 120

    from confide.results.fetch import download_result

    where = up.platform(pool.requester, "r")
    got = download_result(
        where,
        task,
        view,
        tmp_path / "dl",
        key_path=up.root / "r" / "result-key",
        now=int(time.time()),
    )
    assert got.verdict.ok, got.verdict
    assert (tmp_path / "dl" / "result.txt").read_text() == "f(3) = 56\n"
    # the worker kept no secret and no plaintext result
    logged = caplog.text + "".join(str(o) for o in outcomes)
    kept = [p for p in home.rglob("*") if p.is_file()]
    for needle in (DEVELOPER_SECRET, b"f(3) = 56", b"IEXEC_REQUESTER_SECRET_1=3"):
        assert needle.decode() not in logged
        for path in kept:
            assert needle not in path.read_bytes(), path
    assert not any(DEVELOPER_SECRET.decode() in v for v in os.environ.values())
    assert list((home / "jobs").iterdir()) == []


def _children() -> set[int]:
    """This process's child processes (of every thread)."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{task}/children").read_text()
        except OSError:
            continue
        found.update(int(pid) for pid in text.split())
    return found


def test_a_stop_while_the_prewarmed_runtime_waits(up: Up, tmp_path: Path) -> None:
    """The real runtime, started in its sandbox before any task, asks for its job and
    waits; the worker stops: the sandbox ends, no process is left and its job directory
    is removed."""
    pool = Pool(up).deploy()
    home = tmp_path / "worker"
    before = _children()
    worker = start_worker(worker_config(pool, home, runner=None, concurrency=2))
    deadline = time.monotonic() + 30
    while len(list((home / "jobs").glob("job-*"))) < 2 or not _children() - before:
        assert time.monotonic() < deadline, "no runtime was pre-warmed"
        time.sleep(0.05)
    time.sleep(1.5)  # the runtimes have imported everything and wait for a job
    assert len(_children() - before) == 2  # one sandbox per slot
    began = time.monotonic()
    assert worker.finish() == [] and not worker.errors
    assert time.monotonic() - began < 10
    assert _children() - before == set()
    assert list((home / "jobs").iterdir()) == []
