"""What the services of ``confide up`` ask each other, in process instead of over HTTP.

- :class:`HubRecordSource`: the sms's :class:`~confide.sms.hub_registry.RecordSource`
  reading the hub's store directly. The sms verifies what it gets exactly as it does over
  HTTP (owner signatures, the hub's deployment, the highest sequence): only the transport
  differs.
- :func:`sms_order_checker`: the hub's question "what would stop this order's release?"
  answered by the sms's own order validator, on a worker thread (it reads databases).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from confide.db.engine import reading
from confide.hub.checker import OrderChecker
from confide.hub.service import Hub
from confide.records import SignedRecord
from confide.sms.attest.orders import OrderValidator
from confide.sms.service import Sms
from confide.sms.tasks import TaskOrder, TaskOrderError


class HubRecordSource:
    """The hub's records and tasks, read from its database (no HTTP)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def fetch_record(self, address: str) -> SignedRecord | None:
        return self.hub.record(address)

    def fetch_task(self, task_id: str) -> dict[str, Any] | None:
        return self.hub.task_view(task_id)

    def deployment(self) -> str:
        return self.hub.deployment_id


def sms_order_checker(sms: Sms, clock: Callable[[], float] = time.time) -> OrderChecker:
    """The sms's order check (what ``POST /v1/task-orders/check`` answers), in process:
    the same validator, its records looked up first, outside the reading connection."""
    validator = OrderValidator(sms)

    def review(order_json: dict[str, Any], signature: str) -> list[str]:
        try:
            order = TaskOrder.from_json(order_json)
        except TaskOrderError as exc:
            return [str(exc)]
        facts = validator.facts(order)
        with reading(sms.engine) as connection:
            found = validator.review(order, signature, connection, facts, int(clock()))
        return list(found.problems)

    async def check(order_json: dict[str, Any], signature: str) -> list[str]:
        return await asyncio.to_thread(review, order_json, signature)

    return check
