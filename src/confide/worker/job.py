"""One claimed task, from its claim to its final report.

1. The slot's pre-warmed runtime (:class:`confide.worker.prewarm.Prewarmed`: a fresh
   private job directory, mode 0700, never under a ``$CONFIDE_HOME``, which its sandbox
   mounts at ``/job``; the relay; the runtime started and waiting for its job).
2. The app's bundle (and the dataset's blob) downloaded with the claim's grants, each
   checked against its digest, and ``job.json`` (docs/runtime.md) written, all in a
   private staging directory, then renamed into the job directory (``job.json`` last,
   complete when it appears); the runtime is handed its job (the relay's ``job`` answer)
   and reads it. Its stages are reported to the hub as they arrive; at the task's
   deadline (plus a reserve) it is killed.
3. What the runtime left in ``out/`` (an encrypted result archive, sealed logs: never
   opened here) uploaded, signed by the worker's wallet, and the final status reported
   with the fencing token and the result document.
4. The job directory removed; the sandbox is never used again.

The worker holds no key and no plaintext: the sealed configuration is opened inside the
runtime, the result is encrypted there. It reads ``out/report.json`` (statuses, digests,
the enclave's signature) and nothing else the runtime wrote.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confide.client.hub import HubClient, LeaseLostError
from confide.client.storage import StorageClient
from confide.errors import ConfideError
from confide.hub.lifecycle import WORKER_CAUSES
from confide.sms.tasks import TaskOrder, TaskOrderError
from confide.worker.lease import Heartbeat, Progress
from confide.worker.prewarm import Prewarmed
from confide.worker.runner import RunOutcome
from confide.worker.services import Clients, Services

_log = logging.getLogger("confide.worker")
JOB_FORMAT = "confide-job-v1"
APP_MEMORY_BYTES = 2 << 30  # the app's RLIMIT_AS (node needs about 1 GiB to start)
APP_TMPFS_BYTES = 256 << 20
MAX_REPORT_BYTES = 1 << 20
# How long a final report (and an upload) is retried while the hub (the storage) cannot
# be reached, say restarting: past it the lease expires and the task is run again.
REPORT_RETRY_SECONDS = 120.0
UPLOAD_RETRY_SECONDS = 60.0
FETCH_RETRY_SECONDS = 30.0
_OUT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_TIMING = re.compile(r"[a-z_]{1,32}")
# The cause of a runtime that ended without a report, by the last stage it reached.
_CAUSE_AT = {
    "CLAIMED": "PRE_COMPUTE_FAILED",
    "PRE_COMPUTE": "PRE_COMPUTE_FAILED",
    "ATTESTING": "ATTESTATION_FAILED",
    "COMPUTING": "APP_COMPUTE_FAILED",
    "POST_COMPUTE": "POST_COMPUTE_FAILED",
    "UPLOADING": "RESULT_UPLOAD_FAILED",
}


class JobError(ConfideError):
    """A task this worker could not prepare (its cause is PRE_COMPUTE_FAILED)."""


@dataclass(frozen=True)
class Outcome:
    """How a task ended here: its final status as reported (None: not reported, the
    lease was lost) and the cause."""

    task: str
    status: str | None
    cause: str | None
    error: str | None = None


def run_task(
    services: Services,
    claim: dict[str, Any],
    clients: Clients | None = None,
    prewarmed: Prewarmed | None = None,
) -> Outcome:
    """Run one claimed task to its final report (never raises for the task's sake), in
    ``prewarmed`` (closed at the end: one task per sandbox) or a runtime started now."""
    began = time.monotonic()
    view = claim["task"]
    task_id, token = str(view["task"]), str(claim["lease_token"])
    own = clients is None
    used = services.clients() if clients is None else clients
    expires = int(claim["lease_expires_at"])
    heartbeat = Heartbeat(used.beat, task_id, token, expires, services.clock)
    progress = Progress(used.hub, task_id, token)
    timings: dict[str, float] = {}
    with services.lock:
        services.active[task_id] = token
    sandbox = prewarmed
    try:
        try:
            if sandbox is None or sandbox.ended:  # none, or its runtime died: one fresh try
                if sandbox is not None:
                    sandbox.close()
                sandbox = None
                sandbox = Prewarmed(services)
            _prepare(services, used, claim, sandbox)
        except (ConfideError, OSError) as exc:
            why = str(exc) if isinstance(exc, ConfideError) else f"the job directory: {exc}"
            return _final(progress, task_id, "FAILED", "PRE_COMPUTE_FAILED", why, None)
        timings["claim_to_start"] = time.monotonic() - began
        outcome = _run_runtime(sandbox, progress, view)
        progress.settle()
        first = min(progress.reached.values(), default=None)
        if first is not None and sandbox.handed_at is not None:
            # the runtime's start as far as the task waited for it (none when pre-warmed)
            timings["sandbox"] = max(0.0, first - sandbox.handed_at)
        if heartbeat.lost or progress.lost:
            return Outcome(task_id, None, None, heartbeat.lost or progress.lost)
        return _conclude(services, used, progress, task_id, sandbox.job, outcome, timings)
    finally:
        if sandbox is not None:
            sandbox.close()
        with services.lock:
            services.active.pop(task_id, None)
        progress.settle()
        heartbeat.stop()
        if own:
            used.close()


def give_back(services: Services) -> list[str]:
    """Give back the leases of the running tasks (the worker stops before they end): the
    hub queues them again at once. The tasks given back."""
    with services.lock:
        running = dict(services.active)
        services.active.clear()
    given: list[str] = []
    if not running:
        return given
    hub = services.hub()
    try:
        for task_id, token in running.items():
            try:
                hub.release(task_id, token)
            except ConfideError as exc:  # its lease expires instead
                _log.warning("task %s: could not give the lease back: %s", task_id, exc)
                continue
            given.append(task_id)
            _log.info("task %s: lease given back", task_id)
    finally:
        hub.close()
    return given


def _prepare(
    services: Services, clients: Clients, claim: dict[str, Any], sandbox: Prewarmed
) -> None:
    """Download the bundle (and dataset) with the claim's grants and write job.json, in
    a private staging directory; then rename them into the sandbox's job directory
    (job.json last: complete when it appears there; a rename never follows a link)."""
    stage = Path(tempfile.mkdtemp(prefix="stage-", dir=services.work_dir))
    try:
        names = _stage(services, clients, claim, stage, sandbox.relay_fd)
        for name in names:
            os.rename(stage / name, sandbox.job / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _stage(
    services: Services, clients: Clients, claim: dict[str, Any], job: Path, relay_fd: int
) -> list[str]:
    """The job's files in ``job``: their names, job.json last."""
    view, grants = claim["task"], claim.get("grants") or {}
    try:
        order = TaskOrder.from_json(view["order"])
    except (TaskOrderError, KeyError) as exc:
        raise JobError(f"the hub's task holds a malformed order: {exc}") from None
    if order.task_id() != view["task"]:
        raise JobError("the hub's task id is not its order's hash")
    hub, storage = clients.hub, clients.storage
    app = _record(hub, services.deployment, order.app, "app")

    def fetch(digest: str, name: str, grant: str | None) -> None:
        _unrefused(lambda: storage.download(digest, job / name, grant=grant), FETCH_RETRY_SECONDS)

    fetch(str(app.field("bundle")), "bundle.tar", grants.get("bundle"))
    names = ["bundle.tar"]
    if order.dataset is not None:
        dataset = _record(hub, services.deployment, order.dataset, "dataset")
        fetch(str(dataset.field("blob")), "dataset.tar", grants.get("dataset"))
        names.append("dataset.tar")
    document = {
        "format": JOB_FORMAT,
        "task": order.task_id(),
        "lease_token": claim["lease_token"],
        "order": order.to_json(),
        "signature": view["signature"],
        "worker": services.wallet.address,
        "sms_url": services.sms_url,
        "storage_url": services.storage_url,
        "tee": services.tee,
        "sim_platform_key": services.platform_seed if services.tee == "sim" else None,
        "app_logs": bool(app.field("logs")),
        "deadline": int(view["deadline"]),
        "relay_fd": relay_fd,  # the runtime's end of the relay (checked by the runtime)
        "allow_loopback_inputs": services.allow_loopback_inputs,
        "limits": {"memory_bytes": APP_MEMORY_BYTES, "tmpfs_bytes": APP_TMPFS_BYTES},
        **services.extra,
    }
    _write_private(job / "job.json", document)
    return [*names, "job.json"]


def _record(hub: HubClient, deployment: str, address: str, kind: str) -> Any:
    signed = _unrefused(lambda: hub.record(address), FETCH_RETRY_SECONDS)
    if signed is None:
        raise JobError(f"the hub knows no {kind} {address}")
    record = signed.verify(deployment)
    if record.kind != kind:
        raise JobError(f"{address} is not a {kind}")
    return record


def _write_private(path: Path, document: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)


def _run_runtime(sandbox: Prewarmed, progress: Progress, view: dict[str, Any]) -> RunOutcome:
    """Hand the runtime its job; how it ended (killed at the deadline + the reserve)."""
    sandbox.hand(progress.advance)
    outcome = sandbox.wait(float(view["deadline"]))
    for reason in list(getattr(sandbox.relay, "refused", []))[:5]:  # never a secret
        _log.info("task %s: the relay refused: %s", view["task"], reason)
    return outcome


def _conclude(
    services: Services,
    clients: Clients,
    progress: Progress,
    task_id: str,
    job: Path,
    outcome: RunOutcome,
    timings: dict[str, float],
) -> Outcome:
    """Upload what the runtime returned and report the final status."""
    report = _read_report(job / "out" / "report.json")
    if report is None:
        lost = _CAUSE_AT.get(progress.current, "PRE_COMPUTE_FAILED")
        if lost == "APP_COMPUTE_FAILED" and outcome.timed_out:
            lost = "APP_COMPUTE_TIMEOUT"
        why = outcome.reason or (f"exit {outcome.exit_code}" if outcome.exit_code else "no report")
        failure = f"the enclave runtime ended without a report ({why})"
        return _final(progress, task_id, "FAILED", lost, failure, None)
    for stage in ("PRE_COMPUTE", "ATTESTING", "COMPUTING", "POST_COMPUTE"):
        if stage in (report.get("stages") or {}):
            progress.advance_now(stage)
    timings.update(_timings(report.get("timings")))
    status = report.get("status")
    cause: str | None = report["cause"] if report.get("cause") in WORKER_CAUSES else None
    error = _text(report.get("error"))
    if status == "COMPLETED" and report.get("result_file") is None:
        status, cause, error = "FAILED", "POST_COMPUTE_FAILED", "the runtime named no result"
    if status != "COMPLETED":
        cause = cause or _CAUSE_AT.get(progress.current, "POST_COMPUTE_FAILED")
    document: dict[str, Any] = {
        "blob": None,
        "logs_blob": None,
        "statement": report.get("statement") if isinstance(report.get("statement"), dict) else None,
        "signature": _text(report.get("signature")),
        "token": _text(report.get("token")),
        "error": error[:4096] if error else None,
    }
    if status == "COMPLETED":
        progress.advance_now("UPLOADING")
    uploaded = time.monotonic()
    try:
        document["blob"] = _upload(clients.storage, job, report.get("result_file"))
        document["logs_blob"] = _upload(clients.storage, job, report.get("logs_file"))
    except ConfideError as exc:
        if status == "COMPLETED":
            status, cause = "FAILED", "RESULT_UPLOAD_FAILED"
            document.update(blob=None, logs_blob=None, error=f"the upload failed: {exc}"[:4096])
    timings["upload"] = time.monotonic() - uploaded
    document["timings"] = {k: round(v, 2) for k, v in timings.items()}  # public: 10 ms
    if status == "COMPLETED":
        blob = str(document["blob"])
        return _final(progress, task_id, "COMPLETED", None, None, document, digest=blob)
    return _final(progress, task_id, "FAILED", str(cause), document["error"], document)


def _final(
    progress: Progress,
    task_id: str,
    status: str,
    cause: str | None,
    error: str | None,
    document: dict[str, Any] | None,
    *,
    digest: str | None = None,
) -> Outcome:
    if document is None:
        document = {"error": error[:4096]} if error else None
    fields: dict[str, Any] = {"cause": cause, "result": document}
    if digest is not None:  # the hub publishes the ciphertext digest only
        fields.update(result_digest=digest, result_blob=digest)
    try:
        _unrefused(lambda: progress.finish(status, **fields), REPORT_RETRY_SECONDS)
    except LeaseLostError as exc:
        return Outcome(task_id, None, None, str(exc))
    except ConfideError as exc:
        if document is None or "refused (400)" not in str(exc):
            _log.warning("task %s: the final report failed: %s", task_id, exc)
            return Outcome(task_id, None, None, str(exc))
        # the hub refused the result document: report the failure plainly
        error = f"the hub refused the result document: {exc}"[:4096]
        return _final(progress, task_id, "FAILED", "POST_COMPUTE_FAILED", error, None)
    return Outcome(task_id, status, cause, error)


T = TypeVar("T")


def _unrefused(call: Callable[[], T], seconds: float) -> T:
    """``call()``, again while the service cannot be reached (restarting, unavailable),
    for up to ``seconds``; a refusal (an HTTP answer) is raised at once."""
    give_up = time.monotonic() + seconds
    pause = 0.5
    while True:
        try:
            return call()
        except LeaseLostError:
            raise
        except ConfideError as exc:
            if " refused (" in str(exc) or time.monotonic() + pause > give_up:
                raise
            _log.warning("retrying in %.1f s: %s", pause, exc)
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def _read_report(path: Path) -> dict[str, Any] | None:
    """out/report.json as a JSON object (a regular file, bounded), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:
        return None
    try:
        report = json.loads(data)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _upload(storage: StorageClient, job: Path, name: Any) -> str | None:
    """Upload out/``name`` (a regular file, never through a link): its digest."""
    if name is None:
        return None
    if not isinstance(name, str) or not _OUT_NAME.fullmatch(name):
        raise ConfideError(f"the runtime named an output file {name!r} that is not a plain name")
    out = os.open(job / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=out)
    except OSError as exc:
        raise ConfideError(f"the runtime's output {name} is missing: {exc.strerror}") from None
    finally:
        os.close(out)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfideError(f"the runtime's output {name} is not a regular file")
        source = Path(f"/proc/self/fd/{fd}")
        answer = _unrefused(lambda: storage.upload(source), UPLOAD_RETRY_SECONDS)
        return str(answer["digest"])
    finally:
        os.close(fd)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _timings(value: Any) -> dict[str, float]:
    """The runtime's timings that the hub would keep (named, in range)."""
    if not isinstance(value, dict):
        return {}
    return {
        k: float(v)
        for k, v in list(value.items())[:10]
        if isinstance(k, str)
        and _TIMING.fullmatch(k)
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and 0 <= v <= 86400
    }
