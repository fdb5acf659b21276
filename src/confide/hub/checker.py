"""Asking the sms what would stop an order's release (its secrets), before queueing it.

The question goes from the event loop (httpx.AsyncClient, 10 s), never from a database
thread: the sms may read the hub while it answers. The sms's answer is advice for the
requester's sake; the sms checks everything again at release.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from confide.web.problems import HttpProblemError

OrderChecker = Callable[[dict[str, Any], str], Awaitable[list[str]]]
CHECK_TIMEOUT_SECONDS = 10.0


def http_order_checker(sms_url: str, timeout: float = CHECK_TIMEOUT_SECONDS) -> OrderChecker:
    """An order checker over ``POST {sms_url}/v1/task-orders/check``."""
    url = sms_url.rstrip("/") + "/v1/task-orders/check"

    async def check(order: dict[str, Any], signature: str) -> list[str]:
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                answer = await client.post(url, json={"order": order, "signature": signature})
        except httpx.HTTPError as exc:
            raise HttpProblemError(
                503,
                "Service Unavailable",
                f"the sms at {sms_url} could not check the order's secrets "
                f"({type(exc).__name__}): retry shortly",
            ) from None
        try:
            document = answer.json()
        except ValueError:
            document = None
        if answer.status_code != 200 or not isinstance(document, dict):
            detail = document.get("detail") if isinstance(document, dict) else None
            return [f"the sms refused the order: {detail or answer.status_code}"]
        problems = document.get("problems")
        if not isinstance(problems, list):
            return ["the sms answered the order check without a list of problems"]
        return [p for p in problems if isinstance(p, str)]

    return check
