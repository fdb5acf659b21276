"""A fake enclave runtime for the worker's tests (no tests here): run as
``python test_worker_fake_runtime.py JOB_DIR MODE RELAY_FD``, it asks the relay for its
job as a pre-warmed runtime does (and ends at once when there is none), reports its
stages through the relay and writes ``out/`` as the real runtime would, without
attesting or computing.

Modes: ``complete``; ``fail`` (APP_COMPUTE_FAILED with an error archive); ``crash``
(exits 1 after PRE_COMPUTE, no report); ``slow`` (sleeps ``fake_sleep`` seconds of
job.json while COMPUTING, then completes); ``symlink`` (out/result.zip links to a file
outside). With ``trace`` in job.json, it writes what it saw to ``trace/<task>.json``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from confide.relay.client import RelayChannel


def trace(job: Path, document: dict[str, Any]) -> None:
    where = document.get("trace")
    if not where:
        return
    seen = {
        "job": {k: v for k, v in document.items() if k != "sim_platform_key"},
        "has_platform_key": bool(document.get("sim_platform_key")),
        "files": sorted(p.name for p in job.iterdir()),
        "job_mode": stat.S_IMODE(job.stat().st_mode),
        "bundle_size": (job / "bundle.tar").stat().st_size,
        "pid": os.getpid(),
        "dir": str(job),
    }
    target = Path(where) / f"{document['task']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(seen))


def main() -> None:
    job, mode, fd = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    relay = RelayChannel(fd)
    if not relay.wait_job():
        sys.exit(0)  # the worker stops: no job, no report
    document = json.loads((job / "job.json").read_text())
    assert document["relay_fd"] == fd
    trace(job, document)
    out = job / "out"
    out.mkdir()
    relay.stage("PRE_COMPUTE")
    if mode == "crash":
        sys.exit(1)
    relay.stage("ATTESTING")
    relay.stage("COMPUTING")
    if mode == "slow":
        time.sleep(float(document.get("fake_sleep", 5)))
    report: dict[str, Any] = {
        "status": "COMPLETED",
        "cause": None,
        "error": None,
        "result_file": "result.zip",
        "logs_file": "logs.sealed",
        "statement": {"task_id": document["task"], "ciphertext_digest": "…"},
        "signature": "ab" * 64,
        "token": "header.payload.signature",
        "stages": {"PRE_COMPUTE": 1.0, "ATTESTING": 2.0, "COMPUTING": 3.0},
        "timings": {"attest": 0.01, "app": 0.02, "Bad Name": 1},
    }
    if mode == "fail":
        report.update(status="FAILED", cause="APP_COMPUTE_FAILED", error="the app exited 3")
        report.update(statement=None, signature=None, token=None)
    else:
        relay.stage("POST_COMPUTE")
        report["stages"]["POST_COMPUTE"] = 4.0
    if mode == "symlink":
        (out / "result.zip").symlink_to("/etc/passwd")
    else:
        (out / "result.zip").write_bytes(b"PK-ciphertext-" + os.urandom(32))
    (out / "logs.sealed").write_bytes(b"sealed-logs-" + os.urandom(16))
    (out / "report.json").write_text(json.dumps(report))
    relay.close()


if __name__ == "__main__":
    main()
