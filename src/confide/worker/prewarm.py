"""A pre-warmed runtime: the next task's sandbox, started before the task is claimed.

Starting the enclave runtime (the sandbox, Python, importing confide) takes a few tenths
of a second; a worker slot pays it while it waits for a task instead of after. Each
:class:`Prewarmed` is one fresh private job directory (mode 0700, empty), one relay
(:class:`confide.relay.server.RelayServer` on one end of a socketpair, the other passed
to the runtime) and one runtime in its sandbox, started on a thread of its own. The
runtime imports what it needs and asks the relay for its job; the relay waits in
:meth:`Prewarmed._on_job` until

- the worker has claimed a task and put its files into the job directory (each renamed
  in whole, ``job.json`` last) and calls :meth:`hand`: ``ok``, the runtime reads
  ``job.json`` once and runs; or
- the worker stops, or the sandbox waited too long (:meth:`close`): ``ok`` false, the
  runtime ends without a report; then it is killed if it has not, and the job directory
  removed.

The slot claims once the runtime has asked for its job (:meth:`Prewarmed.wait_ready`,
bounded), so that a queued task goes to a slot whose runtime is ready. One sandbox runs
one task: a :class:`Prewarmed` is handed one job at most, and closed
after it (never used again). Until its job is handed over, the relay refuses every
request but ``job``; the stages it reports afterwards go to the task's progress.

The sandbox's wall limit cannot be the task's deadline (no task is known at start): it
is the longest task category, the time a sandbox may wait (:data:`MAX_IDLE_SECONDS`,
after which the slot replaces it) and the reserve; the task's own deadline (plus the
reserve) is enforced by setting the runner's ``cancel`` event then.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confide.errors import ConfideError
from confide.sms.tasks import CATEGORIES
from confide.worker.runner import WALL_RESERVE_SECONDS, RunOutcome

if TYPE_CHECKING:
    from confide.worker.services import Services

_log = logging.getLogger("confide.worker")
MAX_IDLE_SECONDS = 600.0  # a sandbox waiting longer for its task is replaced
CLAIM_MARGIN_SECONDS = 120.0  # a claim (long poll) and the job's download after the wait
WALL_SECONDS = MAX_IDLE_SECONDS + CLAIM_MARGIN_SECONDS + max(CATEGORIES.values())
WALL_SECONDS += WALL_RESERVE_SECONDS
READY_WAIT_SECONDS = 10.0  # a slot claims anyway after this (a slow start)
READY_POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 2.0  # an unused runtime told "no job" ends by itself within this


class Prewarmed:
    """One runtime sandbox waiting for its job (see the module's docstring)."""

    def __init__(self, services: Services) -> None:
        from confide.relay.server import service_endpoint  # noqa: PLC0415

        self.services = services
        services.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.job = Path(tempfile.mkdtemp(prefix="job-", dir=services.work_dir))
        os.chmod(self.job, 0o700)
        self.cancel = threading.Event()
        self.started = time.monotonic()
        self.handed_at: float | None = None
        self.outcome: RunOutcome | None = None
        self.expired = False  # the task's deadline passed: the runtime was killed
        self.asked = threading.Event()  # the runtime has asked for its job: it is ready
        self._gate = threading.Event()
        self._handed: bool | None = None  # True: the job is there; False: there is none
        self._stage_to: Any = None
        self._done = threading.Event()
        self._closed = False
        ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.relay_fd = self._theirs.fileno()
        endpoints = {service_endpoint(services.sms_url), service_endpoint(services.storage_url)}
        try:
            self.relay = services.relay(
                ours,
                services.wallet,
                endpoints,
                services.allow_loopback_inputs,
                self._on_stage,
                on_job=self._on_job,
            )
        except BaseException:
            ours.close()
            self._theirs.close()
            shutil.rmtree(self.job, ignore_errors=True)
            raise
        self._thread = threading.Thread(target=self._run, name="confide-runtime", daemon=True)
        self._thread.start()

    # --- the runtime's side ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.outcome = self.services.runner(self.job, self.relay_fd, WALL_SECONDS, self.cancel)
        except ConfideError as exc:  # no sandbox here: never run unconfined
            self.outcome = RunOutcome(None, False, f"the sandbox could not start: {exc}")
        except Exception as exc:
            self.outcome = RunOutcome(None, False, f"the runtime could not start: {exc}")
        finally:
            self._theirs.close()
            self._done.set()

    def _on_job(self) -> bool:
        """The relay's ``job`` request: wait for the job (True) or its absence (False)."""
        self.asked.set()
        self._gate.wait()
        return bool(self._handed)

    def _on_stage(self, status: str) -> None:
        target = self._stage_to
        if target is not None:  # the relay refuses stages before the job anyway
            target(status)

    # --- the worker's side ----------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """The runtime is gone (it crashed, or never started)."""
        return self._done.is_set()

    def wait_ready(self, seconds: float, stop: threading.Event) -> None:
        """Wait (at most ``seconds``, or until ``stop``) for the runtime to be ready: a
        slot that claims only then leaves a task to a slot whose runtime already waits."""
        give_up = time.monotonic() + seconds
        while not (self.asked.is_set() or self.ended or stop.is_set()):
            if time.monotonic() >= give_up:
                return
            self.asked.wait(READY_POLL_SECONDS)

    def stale(self) -> bool:
        """Better replaced than used: its runtime ended, or it waited too long."""
        return self.ended or time.monotonic() - self.started > MAX_IDLE_SECONDS

    def hand(self, on_stage: Any) -> None:
        """The job is in the directory (job.json complete): let the runtime read it."""
        if self._gate.is_set():
            raise ConfideError("this runtime sandbox was used already")
        self._stage_to = on_stage
        self.handed_at = time.monotonic()
        self._handed = True
        self._gate.set()

    def wait(self, deadline: float) -> RunOutcome:
        """Wait for the runtime to end; at ``deadline`` (unix seconds, the services'
        clock) plus the reserve it is killed."""
        delay = max(0.0, deadline - self.services.clock()) + WALL_RESERVE_SECONDS
        timer = threading.Timer(delay, self._expire)
        timer.daemon = True
        timer.start()
        try:
            self._done.wait()
        finally:
            timer.cancel()
        self.relay.close()
        if self.expired:
            return RunOutcome(None, True, "deadline")
        assert self.outcome is not None  # noqa: S101 (set before _done)
        return self.outcome

    def _expire(self) -> None:
        self.expired = True
        self.cancel.set()

    def close(self) -> None:
        """End it: an unused runtime is told there is no job (then killed if it lingers),
        the relay closed and the job directory removed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._gate.is_set():
            self._handed = False
            self._gate.set()
        if not self._done.wait(STOP_GRACE_SECONDS):
            self.cancel.set()
            self._done.wait()
        self.relay.close()
        shutil.rmtree(self.job, ignore_errors=True)
