"""The workers of ``confide up --workers N``: one in-process worker (confide.worker) with
N slots, for the default workerpool, signing with the operator wallet, in simulation.

They run on threads beside the server, which serves on a thread of its own: at SIGTERM
or ^C the workers stop claiming and finish their running tasks first (their reports
need the server), then the server stops. The worker's own files (its sim platform key)
are under ``up/worker``; job directories in a private temporary directory, outside
``$CONFIDE_HOME`` (the sandbox mounts only the job's).
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

_log = logging.getLogger("confide.worker")
UP_CLAIM_WAIT = 2  # a claim's long poll: ^C is answered within this (the hub wakes a
# waiting claim at once when a task is queued, so a short poll costs no latency)


class UpWorkers:
    """N worker slots on a thread; :meth:`stop` ends them after their running tasks."""

    def __init__(
        self, embedded: Any, home: Path, count: int, *, allow_loopback_inputs: bool = False
    ) -> None:
        from confide.worker import WorkerConfig  # noqa: PLC0415

        self.stopping = threading.Event()
        self.config = WorkerConfig(
            hub_url=embedded.base_url,
            pool=embedded.pool,
            wallet=embedded.signer,
            tee="sim",
            home=home / "up" / "worker",
            concurrency=count,
            claim_wait=UP_CLAIM_WAIT,
            allow_loopback_inputs=allow_loopback_inputs,
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="confide-up-workers", daemon=True)

    def start(self) -> None:
        _log_to_stderr()
        self._thread.start()

    def _run(self) -> None:
        from confide.worker import run_worker  # noqa: PLC0415

        try:
            run_worker(self.config, self.stopping)
        except Exception as exc:  # said once; the platform keeps serving without workers
            self.error = exc
            sys.stderr.write(f"confide up: the workers stopped: {exc}\n")

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        self._thread.join(timeout)


def _log_to_stderr() -> None:
    logger = logging.getLogger("confide.worker")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s worker: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
