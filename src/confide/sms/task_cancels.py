"""Cancels: a requester withdraws a task, and the sms releases nothing for it afterwards.

The hub is told too (``POST /v1/tasks/{task}/cancel``), but a hub that ignores the cancel
and leases the task again must not cause a release: the sms keeps the cancel itself, and
every release of the task (its order's review, and the grant's recheck under the audit
log's lock) refuses it. Only the order's requester cancels (the task id derives from the
order, its requester included); a second cancel changes nothing.
"""

from __future__ import annotations

from sqlalchemy import insert, select

from confide.db import audit
from confide.db.schema import task_cancels
from confide.errors import ConfideError
from confide.sms.service import Sms
from confide.sms.tasks import TaskOrder, TaskOrderError
from confide.web.signed import Signed


class CancelForbiddenError(ConfideError):
    """A cancel signed by another wallet than the order's requester (HTTP 403)."""


def cancel_task(sms: Sms, order: TaskOrder, signature: str, signer: Signed, now: int) -> int:
    """Record the cancel of ``order``'s task (its requester's signature over the order
    checked, TaskOrderError if not; CancelForbiddenError unless ``signer`` is the
    requester), with the request's nonce and an audit entry; the time it was cancelled
    (the first cancel's, for a second one). Only an order that pins this sms and can
    still be released is kept: what a wallet can write here is bounded by its orders'
    validity."""
    order.check_signature(signature)
    if signer.address != order.requester:
        raise CancelForbiddenError(
            f"only the order's requester {order.requester} cancels its task "
            f"(signed by {signer.address})"
        )
    if order.sms_key != sms.tokens.public_key().hex():
        raise TaskOrderError("the task order pins another sms: it has nothing to cancel here")
    if order.valid_until <= now:
        # Never released again anyway (valid_until): nothing to keep, no row to write.
        signer.record()
        return now
    task_id = order.task_id()
    with sms.engine.begin() as connection:
        signer.record_in(connection)
        audit.lock(connection)  # before the read: a grant's recheck sees it, or comes first
        found = connection.execute(
            select(task_cancels.c.cancelled_at).where(task_cancels.c.task_id == task_id)
        ).scalar()
        if found is not None:
            return int(found)
        connection.execute(
            insert(task_cancels).values(
                task_id=task_id, requester=order.requester, cancelled_at=now
            )
        )
        audit.append(
            connection,
            at=now,
            actor=order.requester,
            action="task.cancelled",
            subject=f"task {task_id}",
            detail={"workerpool": order.workerpool, "app": order.app},
        )
    return now
