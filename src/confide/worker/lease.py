"""A claimed task's lease, kept alive and reported on by the worker.

:class:`Heartbeat` renews the lease on a thread of its own, every third of its
lifetime, until the task ends or the hub says the lease is no longer this worker's (a
stale fencing token: it expired and the task went to another worker). :class:`Progress`
reports the task's statuses, forward only: the runtime's stages arrive through the relay
in its own order, and a stage the hub's chain passed already is not reported again, one
skipped is reported on the way (``via``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confide.client.hub import HubClient, LeaseLostError
from confide.errors import ConfideError
from confide.hub.lifecycle import CHAIN

_log = logging.getLogger("confide.worker")
RETRY_SECONDS = 2.0  # a heartbeat that could not reach the hub is tried again this soon


class Heartbeat:
    """Renews ``token``'s lease on ``task_id`` until :meth:`stop` (or the lease is lost)."""

    def __init__(
        self,
        hub: HubClient,
        task_id: str,
        token: str,
        expires_at: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hub, self._task, self._token = hub, task_id, token
        self._expires, self._clock = expires_at, clock
        self._stopped = threading.Event()
        self.lost: str | None = None  # why the lease was lost (the hub's words)
        self._thread = threading.Thread(target=self._run, name="confide-heartbeat", daemon=True)
        self._thread.start()

    def _interval(self) -> float:
        return max(1.0, (self._expires - self._clock()) / 3)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval()):
            try:
                self._expires = self._hub.heartbeat(self._task, self._token)
            except LeaseLostError as exc:
                self.lost = str(exc)
                _log.warning("task %s: lease lost: %s", self._task, exc)
                return
            except ConfideError as exc:  # the hub unreachable: try again soon
                _log.warning("task %s: heartbeat failed, retrying: %s", self._task, exc)
                self._stopped.wait(RETRY_SECONDS)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(30)


class Progress:
    """The task's status at the hub, moved forward by this worker only.

    The runtime's stages (:meth:`advance`, called by the relay) are reported on a thread
    of their own, so the runtime never waits for the hub; :meth:`settle` waits until
    they are all reported, before the worker reports anything else."""

    def __init__(self, hub: HubClient, task_id: str, token: str) -> None:
        self._hub, self._task, self._token = hub, task_id, token
        self._lock = threading.Lock()
        self.current = "CLAIMED"
        self.lost: str | None = None
        self.reached: dict[str, float] = {}  # when each stage was told (monotonic seconds)
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def advance(self, status: str) -> None:
        """Report ``status`` soon (the relay's ``on_stage``: returns at once)."""
        self.reached.setdefault(status, time.monotonic())
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="confide-stages", daemon=True)
            self._thread.start()
        self._queue.put(status)

    def _drain(self) -> None:
        while (status := self._queue.get()) is not None:
            self.advance_now(status)

    def settle(self) -> None:
        """Wait until every stage told so far is reported (or refused)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def advance_now(self, status: str) -> None:
        """Report ``status`` if it lies ahead in the chain (the statuses between ``via``);
        never raises: a refusal is logged, and a lost lease remembered."""
        with self._lock:
            if status not in CHAIN or status in {"COMPLETED", "RECEIVED"} or self.lost:
                return
            self.reached.setdefault(status, time.monotonic())
            here, there = CHAIN.index(self.current), CHAIN.index(status)
            if there <= here:
                return
            try:
                self._hub.report(self._task, self._token, status, via=CHAIN[here + 1 : there])
            except LeaseLostError as exc:
                self.lost = str(exc)
                _log.warning("task %s: lease lost: %s", self._task, exc)
                return
            except ConfideError as exc:
                _log.warning("task %s: could not report %s: %s", self._task, status, exc)
                return
            self.current = status

    def finish(self, status: str, **fields: Any) -> dict[str, Any]:
        """Report the final ``status`` (COMPLETED passes through the chain's remaining
        statuses); the task's view. LeaseLostError, or the hub's refusal, raised."""
        self.settle()
        with self._lock:
            via: tuple[str, ...] = ()
            if status == "COMPLETED":
                via = CHAIN[CHAIN.index(self.current) + 1 : CHAIN.index("COMPLETED")]
            view = self._hub.report(self._task, self._token, status, via=via, **fields)
            self.current = status
            return view
