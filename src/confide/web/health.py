"""``GET /health`` (liveness) and ``GET /ready`` (readiness), for load balancers and
orchestrators.

``/health`` answers 200 as long as the process serves HTTP: restart the service when it
does not. ``/ready`` answers 200 only when the database answers a ``SELECT 1`` within
``timeout`` seconds, and 503 (problem+json, ``Retry-After``) otherwise: send no traffic
to the service meanwhile, but do not restart it, since the database is what is missing.

The probe runs on a thread of its own, never on the event loop nor on the service's
database threads (busy threads are not an unready database), and one probe at a time:
readiness checks that arrive while one is under way wait for its answer, so a database
that hangs holds one thread, not one per check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from confide.db.availability import cause
from confide.db.engine import reading
from confide.web.problems import RETRY_AFTER_SECONDS, problem

READY_TIMEOUT_SECONDS = 2.0
_OK = b'{"status":"ok"}'


class Health:
    """The two routes, over a probe that raises when the database does not answer."""

    def __init__(self, probe: Callable[[], None], timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.probe = probe
        self.timeout = timeout
        self._pending: asyncio.Future[None] | None = None
        self._thread: ThreadPoolExecutor | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
        ]

    async def health(self, request: Request) -> Response:
        return Response(_OK, media_type="application/json")

    async def ready(self, request: Request) -> Response:
        unready = await self.unready()
        if unready is None:
            return Response(_OK, media_type="application/json")
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return problem(503, "Service Unavailable", unready, headers)

    async def unready(self) -> str | None:
        """None when the database answers in time, else why not (no message text: the
        driver's class and code only)."""
        if self._pending is None or self._pending.done():
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="ready")
            self._pending = asyncio.get_running_loop().run_in_executor(self._thread, self.probe)
            self._pending.add_done_callback(_retrieve)  # a late failure is not "unretrieved"
        try:
            await asyncio.wait_for(asyncio.shield(self._pending), self.timeout)
        except TimeoutError:
            return f"the database did not answer within {self.timeout:g} s"
        except Exception as exc:  # any failure of the probe means not ready
            return f"the database does not answer ({cause(exc)})"
        return None

    def close(self) -> None:
        """At shutdown, without waiting for a probe that hangs."""
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
            self._thread = None


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def database_probe(engine: Engine) -> Callable[[], None]:
    """A ``SELECT 1`` on a read connection (on SQLite it takes no lock)."""

    def probe() -> None:
        with reading(engine) as connection:
            connection.execute(text("SELECT 1"))

    return probe
