"""Task statuses, causes and the legal transitions (DESIGN.md "Task lifecycle").

``RECEIVED → CLAIMED → PRE_COMPUTE → ATTESTING → COMPUTING → POST_COMPUTE → UPLOADING →
COMPLETED``; any live status → ``FAILED`` with a cause; ``TIMEOUT`` is the hub's alone (a
category deadline passed). A worker reports the next status of the chain, or FAILED; the
hub requeues (``→ RECEIVED``) a task whose lease expired, fails it after ``max_attempts``
leases (``LEASE_EXPIRED_TOO_OFTEN``) and fails it for its requester
(``CANCELLED_BY_REQUESTER``).
"""

from __future__ import annotations

from confide.errors import TaskError

CHAIN = (
    "RECEIVED",
    "CLAIMED",
    "PRE_COMPUTE",
    "ATTESTING",
    "COMPUTING",
    "POST_COMPUTE",
    "UPLOADING",
    "COMPLETED",
)
FINAL = frozenset({"COMPLETED", "FAILED", "TIMEOUT"})
STATUSES = frozenset({*CHAIN, "FAILED", "TIMEOUT"})
LIVE = tuple(s for s in CHAIN if s not in FINAL)  # not final: counts for the queue limit
LEASED = tuple(s for s in LIVE if s != "RECEIVED")  # held by a worker's lease
# The causes a worker may report with FAILED, and those only the hub sets.
WORKER_CAUSES = frozenset(
    {
        "PRE_COMPUTE_FAILED",
        "ATTESTATION_FAILED",
        "APP_COMPUTE_FAILED",
        "APP_COMPUTE_TIMEOUT",
        "POST_COMPUTE_FAILED",
        "RESULT_UPLOAD_FAILED",
    }
)
LEASE_EXPIRED_TOO_OFTEN = "LEASE_EXPIRED_TOO_OFTEN"
CANCELLED_BY_REQUESTER = "CANCELLED_BY_REQUESTER"
DEADLINE_PASSED = "DEADLINE_PASSED"  # the cause of a TIMEOUT
ORDER_EXPIRED = "ORDER_EXPIRED"  # a TIMEOUT: the order's valid_until passed in the queue
CAUSES = WORKER_CAUSES | {LEASE_EXPIRED_TOO_OFTEN, CANCELLED_BY_REQUESTER}


class IllegalTransitionError(TaskError):
    """A status change the lifecycle does not allow; the message names both states."""

    def __init__(self, current: str, wanted: str, why: str = "") -> None:
        tail = f": {why}" if why else ""
        super().__init__(f"illegal transition {current} → {wanted}{tail}")
        self.current, self.wanted = current, wanted


def check_report(current: str, wanted: str) -> None:
    """A worker's report of ``wanted`` for a task in ``current`` (raises when illegal)."""
    if wanted not in STATUSES:
        raise TaskError(f"unknown status {wanted!r}: one of {', '.join(sorted(STATUSES))}")
    if current in FINAL:
        raise IllegalTransitionError(current, wanted, f"the task is {current} already")
    if wanted == "TIMEOUT":
        raise IllegalTransitionError(current, wanted, "TIMEOUT is set by the hub only")
    if wanted == "FAILED":
        return
    position = CHAIN.index(current)
    if wanted in {"RECEIVED", "CLAIMED"} or CHAIN[position + 1] != wanted:
        following = CHAIN[position + 1]
        raise IllegalTransitionError(current, wanted, f"next is {following} or FAILED")


def check_path(current: str, path: list[str]) -> str:
    """The status after reporting each of ``path`` in turn from ``current``."""
    for wanted in path:
        check_report(current, wanted)
        current = wanted
    return current
