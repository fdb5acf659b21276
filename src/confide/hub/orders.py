"""What the hub checks before it queues a task order, every problem collected.

A problem found here is one the sms would refuse the release for anyway (it checks the
same records itself); finding it at ``app run`` tells the requester at once, naming it,
instead of failing inside the enclave. The sms's own problems (the mapped secrets, their
release policies) are asked of the sms and added by the caller.
"""

from __future__ import annotations

from sqlalchemy import Connection

from confide.errors import ConfideError
from confide.hub.records import RecordStore
from confide.sms.tasks import MAX_VALIDITY_SECONDS, TaskOrder, TaskOrderError


class OrderRefusedError(ConfideError):
    """An order the hub will not queue (422); ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the task order is refused: " + "; ".join(problems))
        self.problems = problems


class QueueLimitError(OrderRefusedError):
    """The requester's only problem: too many tasks queued or running (429)."""


def order_problems(
    order: TaskOrder, signature: str, records: RecordStore, connection: Connection, now: int
) -> list[str]:
    """Every reason the hub has not to queue ``order`` (empty: none)."""
    problems: list[str] = []
    try:
        order.check_signature(signature)
    except TaskOrderError as exc:
        problems.append(str(exc))
    if order.valid_until <= now:
        problems.append(f"the task order expired at {order.valid_until} (now {now})")
    elif order.valid_until > now + MAX_VALIDITY_SECONDS:
        problems.append(
            f"the task order's valid_until {order.valid_until} is more than "
            f"{MAX_VALIDITY_SECONDS // 86400} days ahead"
        )
    app = records.kept(connection, order.app, "app")
    if app is None:
        problems.append(f"unknown app {order.app}")
    elif order.app_measurement != app.measurement:
        problems.append(
            f"the order's app measurement {order.app_measurement} is not the one in app "
            f"{order.app}'s record ({app.measurement})"
        )
    pool = records.kept(connection, order.workerpool, "workerpool")
    if pool is None:
        problems.append(f"unknown workerpool {order.workerpool}")
    elif pool.requesters is not None and order.requester not in pool.requesters:
        problems.append(f"workerpool {order.workerpool} does not admit requester {order.requester}")
    if order.dataset is None:
        if order.dataset_checksum is not None:
            problems.append("the order names a dataset checksum but no dataset")
    else:
        dataset = records.kept(connection, order.dataset, "dataset")
        if dataset is None:
            problems.append(f"unknown dataset {order.dataset}")
        elif order.dataset_checksum != dataset.field("checksum"):
            problems.append(
                f"the order's dataset checksum {order.dataset_checksum} is not dataset "
                f"{order.dataset}'s ({dataset.field('checksum')})"
            )
    return problems
