"""Tasks in the database: queue, claim with a lease, heartbeat, reports, cancel, sweep.

Every function runs in the caller's transaction (one short transaction per request). A
claim is one transaction: on PostgreSQL the next task is locked with ``FOR UPDATE SKIP
LOCKED`` (two hubs claiming at once take two tasks), on SQLite the transaction is
``BEGIN IMMEDIATE`` (confide.db.engine), so one claim at a time. Each claim mints a new
fencing token (128 bits); a heartbeat or report carrying another is refused, so a worker
presumed dead cannot overwrite its successor's work.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, null, select, update

from confide.db.direct import DirectStatement
from confide.errors import ConfideError
from confide.hub.lifecycle import (
    DEADLINE_PASSED,
    FINAL,
    LEASE_EXPIRED_TOO_OFTEN,
    LEASED,
    LIVE,
    ORDER_EXPIRED,
    IllegalTransitionError,
)
from confide.hub.tables import hub_tasks
from confide.sms.tasks import CATEGORIES, TaskOrder

SWEEP_BATCH = 200  # tasks a sweep handles per transaction
_T = hub_tasks.c
# The hot statements, compiled once and run on the driver (confide.db.direct). FOR UPDATE
# is PostgreSQL's; SQLite's compiler leaves it out (its transaction holds the write lock).
_NEXT = DirectStatement(
    select(hub_tasks)
    .where(_T.workerpool == bindparam("pool"), _T.status == "RECEIVED")
    .order_by(_T.seq)
    .limit(1)
    .with_for_update(skip_locked=True)
)
_LEASE = DirectStatement(
    update(hub_tasks)
    .where(_T.seq == bindparam("s"), _T.status == "RECEIVED")
    .values(
        status="CLAIMED",
        attempts=_T.attempts + 1,
        lease_token=bindparam("b_token"),
        lease_worker=bindparam("b_worker"),
        lease_expires_at=bindparam("b_expires"),
        deadline=bindparam("b_deadline"),
        wake_at=bindparam("b_wake"),
        updated_at=bindparam("b_now"),
        times=bindparam("b_times"),
    )
)
_HELD = DirectStatement(select(hub_tasks).where(_T.task_id == bindparam("task")).with_for_update())
_ROW = DirectStatement(select(hub_tasks).where(_T.task_id == bindparam("task")))
_ADVANCE = DirectStatement(
    update(hub_tasks)
    .where(_T.seq == bindparam("s"))
    .values(status=bindparam("b_status"), updated_at=bindparam("b_now"), times=bindparam("b_times"))
)
_FINISH = DirectStatement(
    update(hub_tasks)
    .where(_T.seq == bindparam("s"))
    .values(
        status=bindparam("b_status"),
        cause=bindparam("b_cause"),
        result_digest=bindparam("b_digest"),
        result_blob=bindparam("b_blob"),
        result=bindparam("b_result"),
        times=bindparam("b_times"),
        lease_token=null(),
        lease_worker=null(),
        lease_expires_at=null(),
        wake_at=null(),
        updated_at=bindparam("b_now"),
    )
)
_DUE = DirectStatement(select(_T.seq).where(_T.wake_at <= bindparam("now")).limit(1))


class TaskNotFoundError(ConfideError):
    """No such task (404)."""


class TaskForbiddenError(ConfideError):
    """The signer may not do this to the task (403)."""


class StaleLeaseError(ConfideError):
    """A heartbeat or report whose fencing token is not the task's current one (409)."""


def _locked(query: Any, connection: Connection, skip: bool = False) -> Any:
    if connection.dialect.name != "postgresql":
        return query  # SQLite: the transaction holds the write lock already
    return query.with_for_update(skip_locked=skip)


def _wake(*times: int | None) -> int | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


_COLUMNS = (
    "task_id",
    "requester",
    "app",
    "workerpool",
    "dataset",
    "category",
    "status",
    "cause",
    "attempts",
    "max_attempts",
    "created_at",
    "updated_at",
    "deadline",
    "valid_until",
    "result_digest",
    "result_blob",
    "lease_token",
    "lease_worker",
    "lease_expires_at",
    "wake_at",
    "order_json",
    "signature",
    "result",
    "times",
)
_INSERT = DirectStatement(insert(hub_tasks), columns=_COLUMNS)
_LIVE_COUNT = DirectStatement(
    select(func.count().label("n")).where(
        _T.requester == bindparam("requester"),
        _T.status.in_([bindparam(f"live_{i}") for i in range(len(LIVE))]),
    )
)
_LIVE_PARAMS = {f"live_{i}": status for i, status in enumerate(LIVE)}


def queue(connection: Connection, order: TaskOrder, signature: str, now: int) -> dict[str, Any]:
    """Queue ``order``'s task (RECEIVED); its view."""
    values: dict[str, Any] = dict.fromkeys(_COLUMNS)
    values.update(
        task_id=order.task_id(),
        requester=order.requester,
        app=order.app,
        workerpool=order.workerpool,
        dataset=order.dataset,
        category=order.category,
        status="RECEIVED",
        attempts=0,
        max_attempts=order.max_attempts,
        created_at=now,
        updated_at=now,
        valid_until=order.valid_until,
        wake_at=order.valid_until,
        order_json=order.canonical(),
        signature=signature,
        times=_times(None, ("RECEIVED",), now),
    )
    _INSERT.execute(connection, values)
    return view(_Values(values))


class _Values:
    """A row's values by attribute, as :func:`view` reads a row."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def queued_count(connection: Connection, requester: str) -> int:
    """The requester's tasks not final yet (what the per-requester limit counts)."""
    found = _LIVE_COUNT.first(connection, {"requester": requester, **_LIVE_PARAMS})
    return int(found.n)


def row(connection: Connection, task_id: str, lock: bool = False) -> Any:
    """The task's row (a named tuple), or None; ``lock``: FOR UPDATE on PostgreSQL."""
    return (_HELD if lock else _ROW).first(connection, {"task": task_id})


def existing(connection: Connection, task_id: str) -> Any:
    found = row(connection, task_id)
    if found is None:
        raise TaskNotFoundError(f"no task {task_id}")
    return found


@dataclass(frozen=True)
class Lease:
    task_id: str
    token: str
    expires_at: int


def claim(
    connection: Connection, pool: str, worker: str, now: int, lease_seconds: int
) -> tuple[Lease, dict[str, Any]] | None:
    """The oldest queued task of ``pool`` leased to ``worker`` and its view, or None."""
    found = _NEXT.first(connection, {"pool": pool})
    if found is None:
        return None
    token = secrets.token_hex(16)
    expires = now + lease_seconds
    deadline = found.deadline if found.deadline is not None else now + CATEGORIES[found.category]
    times = _times(found.times, ("CLAIMED",), now)
    changes = {
        "b_token": token,
        "b_worker": worker,
        "b_expires": expires,
        "b_deadline": deadline,
        "b_wake": min(expires, deadline),
        "b_now": now,
        "b_times": times,
    }
    if _LEASE.execute(connection, {"s": found.seq, **changes}) != 1:
        # cannot happen under the lock; never lease a task twice
        raise ConfideError(f"task {found.task_id} was claimed concurrently")
    lease = Lease(found.task_id, token, expires)
    claimed = view(found)
    claimed.update(
        status="CLAIMED",
        attempts=found.attempts + 1,
        deadline=deadline,
        lease={"token": token, "worker": worker, "expires_at": expires},
        times=json.loads(times),
    )
    return lease, claimed


def held(connection: Connection, task_id: str, worker: str, token: str, now: int) -> Any:
    """The task, locked, if ``worker`` holds its current lease under ``token``."""
    found = row(connection, task_id, lock=True)
    if found is None:
        raise TaskNotFoundError(f"no task {task_id}")
    if found.lease_token is None or not secrets.compare_digest(found.lease_token, token):
        raise StaleLeaseError(
            f"stale fencing token for task {task_id}: the task is {found.status} and this "
            f"lease is not its current one"
        )
    if found.lease_worker != worker:
        raise TaskForbiddenError(f"task {task_id}'s lease is held by another worker")
    if found.lease_expires_at is not None and found.lease_expires_at <= now:
        raise StaleLeaseError(f"stale fencing token for task {task_id}: the lease expired")
    return found


def heartbeat(
    connection: Connection, task_id: str, worker: str, token: str, now: int, lease_seconds: int
) -> int:
    found = held(connection, task_id, worker, token, now)
    expires = now + lease_seconds
    connection.execute(
        update(hub_tasks)
        .where(hub_tasks.c.seq == found.seq)
        .values(lease_expires_at=expires, wake_at=_wake(expires, found.deadline), updated_at=now)
    )
    return expires


def set_status(
    connection: Connection,
    found: Any,
    status: str,
    now: int,
    *,
    cause: str | None = None,
    result: tuple[str, str] | None = None,
    document: dict[str, Any] | None = None,
    passed: Sequence[str] = (),
) -> dict[str, Any]:
    """Move ``found`` to ``status`` (checked by the caller) through ``passed``; a final
    one ends the lease and keeps ``document`` (the worker's result document). The time
    of each status is recorded with the change. The task's view after the change."""
    after = view(found)
    after["status"] = status
    times = _times(found.times, (*passed, status), now)
    after["times"] = json.loads(times)
    if status in FINAL:
        digest, blob = result if result is not None else (None, None)
        kept = None if document is None else _json(document)
        values = {
            "b_cause": cause,
            "b_digest": digest,
            "b_blob": blob,
            "b_result": kept,
            "b_times": times,
        }
        _FINISH.execute(connection, {"s": found.seq, "b_status": status, "b_now": now, **values})
        after.update(
            cause=cause, result_digest=digest, result_blob=blob, result=document, lease=None
        )
    else:
        _ADVANCE.execute(
            connection, {"s": found.seq, "b_status": status, "b_now": now, "b_times": times}
        )
    return after


def _json(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def _times(kept: str | None, statuses: Sequence[str], now: int) -> str:
    """The ``times`` column after ``statuses`` were entered at ``now``: {STATUS: unix
    seconds}, the latest entry of each, in the order they were last entered."""
    times: dict[str, int] = json.loads(kept) if kept else {}
    for status in statuses:
        times.pop(status, None)
        times[status] = now
    return json.dumps(times, separators=(",", ":"))


def sweep_due(connection: Connection, now: int) -> bool:
    """Whether a live task is due for the sweep (one indexed probe)."""
    return _DUE.first(connection, {"now": now}) is not None


def cancel(connection: Connection, task_id: str, requester: str, now: int) -> None:
    found = row(connection, task_id, lock=True)
    if found is None:
        raise TaskNotFoundError(f"no task {task_id}")
    if found.requester != requester:
        raise TaskForbiddenError(f"only task {task_id}'s requester {found.requester} cancels it")
    if found.status in FINAL:
        raise IllegalTransitionError(found.status, "FAILED", f"the task is {found.status} already")
    set_status(connection, found, "FAILED", now, cause="CANCELLED_BY_REQUESTER")


def sweep(connection: Connection, now: int) -> set[str]:
    """Handle the live tasks that are due: an expired lease requeues the task (or fails
    it after ``max_attempts`` leases), a passed deadline or order is TIMEOUT. The pools
    whose queue gained a task."""
    query = (
        select(hub_tasks)
        .where(hub_tasks.c.wake_at <= now)
        .order_by(hub_tasks.c.wake_at)
        .limit(SWEEP_BATCH)
    )
    requeued: set[str] = set()
    for found in connection.execute(_locked(query, connection, skip=True)).all():
        if found.deadline is not None and found.deadline <= now:
            set_status(connection, found, "TIMEOUT", now, cause=DEADLINE_PASSED)
        elif found.status == "RECEIVED" and found.valid_until <= now:
            set_status(connection, found, "TIMEOUT", now, cause=ORDER_EXPIRED)
        elif found.status in LEASED and (found.lease_expires_at or 0) <= now:
            if found.attempts >= found.max_attempts:
                set_status(connection, found, "FAILED", now, cause=LEASE_EXPIRED_TOO_OFTEN)
            else:
                _requeue(connection, found, now)
                requeued.add(found.workerpool)
        else:  # not due after all (a lease renewed): look again when it is
            wake = _wake(found.lease_expires_at, found.deadline)
            if found.status == "RECEIVED":
                wake = _wake(found.deadline, found.valid_until)
            connection.execute(
                update(hub_tasks).where(hub_tasks.c.seq == found.seq).values(wake_at=wake)
            )
    return requeued


def give_back(connection: Connection, found: Any, now: int) -> None:
    """A lease its worker gave back (it cannot finish): as if it expired now, the task is
    queued again, or fails after ``max_attempts`` leases."""
    if found.attempts >= found.max_attempts:
        set_status(connection, found, "FAILED", now, cause=LEASE_EXPIRED_TOO_OFTEN)
    else:
        _requeue(connection, found, now)


def _requeue(connection: Connection, found: Any, now: int) -> None:
    connection.execute(
        update(hub_tasks)
        .where(hub_tasks.c.seq == found.seq)
        .values(
            status="RECEIVED",
            lease_token=None,
            lease_worker=None,
            lease_expires_at=None,
            wake_at=_wake(found.deadline, found.valid_until),
            updated_at=now,
            times=_times(found.times, ("RECEIVED",), now),
        )
    )


def view(found: Any) -> dict[str, Any]:
    """The ``GET /v1/tasks/{task}`` document of a task row."""
    lease = None
    if found.lease_token is not None:
        lease = {
            "token": found.lease_token,
            "worker": found.lease_worker,
            "expires_at": found.lease_expires_at,
        }
    return {
        "task": found.task_id,
        "status": found.status,
        "cause": found.cause,
        "requester": found.requester,
        "app": found.app,
        "workerpool": found.workerpool,
        "dataset": found.dataset,
        "category": found.category,
        "attempts": found.attempts,
        "max_attempts": found.max_attempts,
        "created_at": found.created_at,
        "deadline": found.deadline,
        "valid_until": found.valid_until,
        "result_digest": found.result_digest,
        "result_blob": found.result_blob,
        "order": json.loads(found.order_json),
        "signature": found.signature,
        "lease": lease,
        "result": json.loads(found.result) if found.result else None,
        "times": json.loads(found.times) if found.times else {"RECEIVED": found.created_at},
    }


def listed(
    connection: Connection,
    *,
    requester: str | None,
    workerpool: str | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = select(hub_tasks)
    if requester is not None:
        query = query.where(hub_tasks.c.requester == requester)
    if workerpool is not None:
        query = query.where(hub_tasks.c.workerpool == workerpool)
    if status is not None:
        query = query.where(hub_tasks.c.status == status)
    query = query.order_by(hub_tasks.c.seq.desc()).limit(limit)
    return [view(r) for r in connection.execute(query)]
