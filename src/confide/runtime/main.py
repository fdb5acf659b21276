"""``python -m confide.runtime JOB_DIR``: one task, from job.json to report.json.

PRE_COMPUTE (bundle extracted and measured, args split, input files fetched, dataset
volume extracted and its tag checked) → ATTESTING (keys, evidence, the sealed
configuration opened; then the dataset decrypted into IEXEC_IN) → the relay closed →
COMPUTING (the app in its nested sandbox) → POST_COMPUTE (computed.json, the result
archived and signed, the logs sealed). Plaintext (bundle, inputs, dataset, IEXEC_OUT)
lives in a private directory on the runtime's own tmpfs, removed at the end; only
ciphertext and report.json reach ``JOB_DIR/out``.

A failure before the attestation is told in report.json only (nothing was released);
after it, the requester also gets a result holding ``error.txt`` (signed like any result)
and, when the app ran and its owner allows logs, the sealed logs. Exit status: 0 when
report.json was written (COMPLETED or FAILED: the report says which), 2 otherwise.

``python -m confide.runtime JOB_DIR --wait-job FD`` is the pre-warmed start the worker
uses: the runtime is started (and imports all it needs) before its task is claimed, with
an empty job directory and the relay on descriptor FD. It asks the relay for its job
(``{"op": "job"}``) and waits; once answered ``ok`` it reads ``job.json`` (once, then as
above: the same checks, and its ``relay_fd`` must be FD). Answered ``ok`` false (the
worker stops), it ends at once, without a report (exit 0).
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

from confide.errors import ConfideError
from confide.relay.client import RelayChannel, RelayTransport, close_fd
from confide.runtime import attest as attesting
from confide.runtime import compute, postcompute, precompute
from confide.runtime.inputs import fetch_inputs
from confide.runtime.job import Job, load_job, read_relay_fd
from confide.runtime.stages import (
    APP_COMPUTE_FAILED,
    ATTESTATION_FAILED,
    LOGS_FILE,
    POST_COMPUTE_FAILED,
    PRE_COMPUTE_FAILED,
    RESULT_FILE,
    Outcome,
    Progress,
    Redactor,
    TaskFailure,
    write_report,
)
from confide.sandbox import Finished

USAGE = "usage: python -m confide.runtime JOB_DIR [--wait-job RELAY_FD]"
# What a task imports only when it needs it: a pre-warmed runtime imports it while it
# waits for its job, so that no task pays for it.
# (A dataset's decryption, confide.volume.api, is left to the tasks that have one.)
WARM_MODULES = (
    "confide.sandbox.extract",
    "encodings.idna",
    "httpcore._sync.http11",
    "h11",
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1:
        return run_job(Path(args[0]))
    if len(args) == 3 and args[1] == "--wait-job" and args[2].isdigit():
        return wait_and_run(Path(args[0]), int(args[2]))
    print(USAGE, file=sys.stderr)
    return 2


def wait_and_run(directory: Path, relay_fd: int) -> int:
    """The pre-warmed start: warm up, ask the relay for the job, then run it."""
    try:
        channel = RelayChannel(relay_fd)
    except (OSError, ConfideError):
        return 2  # no relay: the worker sees a runtime that ended without a report
    _warm()
    if not channel.wait_job():
        channel.close()
        return 0
    return run_job(directory, channel)


def _warm() -> None:
    import importlib  # noqa: PLC0415

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def run_job(directory: Path, channel: RelayChannel | None = None) -> int:
    """Run the job of ``directory``; ``channel``: the relay a pre-warmed runtime was
    started with (else the one job.json names)."""
    out = directory / "out"
    try:
        out.mkdir(mode=0o755, exist_ok=True)
    except OSError:
        if channel is not None:
            channel.close()
        return 2
    progress, outcome = Progress(None), Outcome()
    try:
        job = load_job(directory)  # read once: a pre-warmed runtime, after the relay's ok
        if channel is not None and job.relay_fd != channel.fd:
            raise ConfideError(f"job.json names relay_fd {job.relay_fd}, the relay is {channel.fd}")
    except ConfideError as exc:
        if channel is not None:
            channel.close()
        else:
            fd = read_relay_fd(directory)
            if fd is not None:
                close_fd(fd)
        outcome.fail(TaskFailure(PRE_COMPUTE_FAILED, f"bad job: {exc}"), Redactor())
        return _report(out, outcome, progress)
    if channel is None:
        try:
            channel = RelayChannel(job.relay_fd)
        except (OSError, ConfideError) as exc:
            why = f"the relay descriptor {job.relay_fd} is not usable: {exc}"
            outcome.fail(TaskFailure(PRE_COMPUTE_FAILED, why), Redactor())
            return _report(out, outcome, progress)
    progress.channel = channel
    with tempfile.TemporaryDirectory(prefix="confide-runtime-", ignore_cleanup_errors=True) as work:
        Task(job, channel, progress, outcome, Path(work)).run()
    channel.close()
    return _report(out, outcome, progress)


def _report(out: Path, outcome: Outcome, progress: Progress) -> int:
    try:
        write_report(out, outcome, progress)
    except OSError:
        return 2
    return 0


class Task:
    """One run of the three stages; fills ``outcome``."""

    def __init__(
        self, job: Job, channel: RelayChannel, progress: Progress, outcome: Outcome, work: Path
    ) -> None:
        self.job, self.channel, self.progress, self.outcome = job, channel, progress, outcome
        self.work = work
        self.redactor = Redactor()
        self.attested: attesting.Attested | None = None
        self.finished: Finished | None = None
        self.in_dir, self.out_dir = work / "iexec_in", work / "iexec_out"

    def run(self) -> None:
        try:
            self._stages()
        except TaskFailure as failure:
            self._failed(failure)
        except Exception as exc:  # a stage let one through: still a cause, and a report
            self._failed(TaskFailure(self._cause_now(), f"{type(exc).__name__}: {exc}"))

    def _stages(self) -> None:
        job, progress = self.job, self.progress
        progress.enter("PRE_COMPUTE")
        progress.start("pre_compute")
        self.in_dir.mkdir(mode=0o755)
        self.out_dir.mkdir(mode=0o755)
        bundle = precompute.prepare_bundle(job, self.work)
        args = precompute.split_args(job.order.args)
        inputs = self._fetch_inputs()
        volume = precompute.prepare_dataset(job, self.work)
        progress.stop("pre_compute")

        progress.enter("ATTESTING")
        progress.start("attest")
        self.attested = attesting.attest(job, self.channel, job.order.app_measurement)
        self._learn_secrets()
        progress.stop("attest")
        dataset = None
        if volume is not None:
            key = precompute.dataset_key(self.attested.released.config)
            dataset = precompute.decrypt_dataset(job, volume, key, self.work, self.in_dir)

        environment = self.attested.released.config.get("environment") or {}
        env = compute.app_environment(job, environment, dataset, inputs)
        argv = compute.app_argv(bundle, args)
        progress.enter("COMPUTING")
        self.channel.close()  # nothing the app could reach, nothing after it either
        progress.start("app")
        self.finished = compute.run_app(job, bundle, self.in_dir, self.out_dir, env, argv)
        progress.stop("app")
        failure = compute.judge(self.finished)
        if failure is not None:
            raise failure

        progress.enter("POST_COMPUTE")  # the worker learns it from report.json
        progress.start("post_compute")
        postcompute.check_computed(self.out_dir)
        built = postcompute.build(self.out_dir, job, self.attested, self.work)
        self._logs()  # first: the statement signs the sealed logs' digest
        postcompute.sign(job, self.attested, built, self.outcome)
        self.outcome.status, self.outcome.cause, self.outcome.error = "COMPLETED", None, None
        progress.stop("post_compute")

    def _fetch_inputs(self) -> list[str]:
        job = self.job
        if not job.order.input_files:
            return []
        import httpx  # noqa: PLC0415 (only tasks with input files need a client)

        transport = RelayTransport(self.channel)
        with httpx.Client(transport=transport, follow_redirects=False) as client:
            return fetch_inputs(
                job.order.input_files,
                client,
                self.in_dir,
                # a test flag of simulation only: on a hardware TEE the worker that
                # writes job.json could otherwise aim input files at the host
                allow_loopback=job.allow_loopback_inputs and job.tee == "sim",
            )

    def _learn_secrets(self) -> None:
        """Every released value the logs and error texts must never show."""
        assert self.attested is not None  # noqa: S101 (called right after attesting)
        config = self.attested.released.config
        for name, value in (config.get("environment") or {}).items():
            if compute.SECRET_NAMES.fullmatch(str(name)) and isinstance(value, str):
                self.redactor.add(value.encode())
        dataset = config.get("dataset")
        if isinstance(dataset, dict) and isinstance(dataset.get("key"), str):
            self.redactor.add(dataset["key"].encode())
            try:
                raw = base64.b64decode(dataset["key"])
            except ValueError:
                raw = b""
            self.redactor.add(raw)
            self.redactor.add(raw.strip())

    def _cause_now(self) -> str:
        """The cause of an unexpected error: that of the stage it happened in."""
        reached = list(self.progress.stages)
        last = reached[-1] if reached else "PRE_COMPUTE"
        if last == "ATTESTING":
            return ATTESTATION_FAILED if self.attested is None else PRE_COMPUTE_FAILED
        return {
            "PRE_COMPUTE": PRE_COMPUTE_FAILED,
            "COMPUTING": APP_COMPUTE_FAILED,
            "POST_COMPUTE": POST_COMPUTE_FAILED,
        }[last]

    def _failed(self, failure: TaskFailure) -> None:
        self.outcome.result_file = self.outcome.statement = None
        self.outcome.signature = self.outcome.token = None
        self.outcome.fail(failure, self.redactor)
        self.channel.close()
        for name in (RESULT_FILE, LOGS_FILE):  # nothing of a result that did not complete
            (self.job.out / name).unlink(missing_ok=True)
        if self.attested is None:
            return  # nothing was released: report.json says why, and that is all
        message = f"{failure.cause}: {self.outcome.error}"
        try:
            built = postcompute.error_result(message, self.job, self.attested, self.work)
            self._logs()
            postcompute.sign(self.job, self.attested, built, self.outcome)
        except Exception as exc:  # the report is still written, with both reasons
            self.outcome.error = self.redactor.text(
                f"{self.outcome.error}; and the error result could not be made: {exc}"
            )[:2000]

    def _logs(self) -> None:
        if self.finished is None or self.attested is None:
            return
        logs = postcompute.app_logs(self.finished, self.redactor)
        postcompute.deliver_logs(self.job, self.attested, logs, self.outcome)
