"""The worker (untrusted): claims tasks of its workerpool, runs the enclave runtime in the
sandbox, uploads the ciphertext it returns and reports (docs/worker.md)."""

from confide.worker.job import Outcome
from confide.worker.loop import WorkerConfig, WorkerError, run_worker
from confide.worker.runner import Runner, RunOutcome, SandboxRunner
from confide.worker.tee import TeeError, choose_tee, detect_tee

__all__ = [
    "Outcome",
    "RunOutcome",
    "Runner",
    "SandboxRunner",
    "TeeError",
    "WorkerConfig",
    "WorkerError",
    "choose_tee",
    "detect_tee",
    "run_worker",
]
