"""The hub over HTTP (Starlette): thin routes over :class:`confide.hub.service.Hub`.

Every write is a signed request handled inside ``Handlers.signed_request`` (its nonce
recorded in the transaction of its effect, used up on a refusal); refusals are
problem+json from one table (:data:`PROBLEMS`). Database work runs on the database
threads; the sms's order check runs on the event loop (the sms may call back here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.errors import TaskError
from confide.hub.batch import GroupCommit
from confide.hub.checker import OrderChecker, http_order_checker
from confide.hub.lifecycle import STATUSES, IllegalTransitionError
from confide.hub.openapi import openapi_document
from confide.hub.orders import OrderRefusedError, QueueLimitError
from confide.hub.records import RecordConflictError, UnknownRecordError, record_view
from confide.hub.results import check_result
from confide.hub.service import Claimed, ClaimForbiddenError, Hub, NoResultError, Report
from confide.hub.tasks import StaleLeaseError, TaskForbiddenError, TaskNotFoundError
from confide.records import RecordError, SignedRecord
from confide.sms.tasks import TaskOrder, TaskOrderError
from confide.web.bodies import json_object, path_address, read_body
from confide.web.handlers import Clock, Handlers
from confide.web.health import Health, database_probe
from confide.web.info import info_route
from confide.web.limits import BodyLimits, Limits
from confide.web.problems import (
    BASE_TABLE,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    Answer,
    HttpProblemError,
    exception_handlers,
)
from confide.web.signed import Signed

T = TypeVar("T")
_log = logging.getLogger("confide.hub")
RECORD_BODY_LIMIT = 300 * 1024  # a record (256 KiB at most) and its wrapper
SMALL_BODY_LIMIT = 64 * 1024
MAX_WAIT_SECONDS = 20
RECHECK_SECONDS = 2.0  # a waiting claim looks again (another hub may have queued a task)
_UNPROCESSABLE = Answer(422, "Unprocessable Content", fields=("problems",))
PROBLEMS = BASE_TABLE.extended(
    {
        RecordError: Answer(422, "Unprocessable Content"),
        RecordConflictError: CONFLICT,
        UnknownRecordError: NOT_FOUND,
        TaskNotFoundError: NOT_FOUND,
        TaskForbiddenError: FORBIDDEN,
        ClaimForbiddenError: FORBIDDEN,
        NoResultError: CONFLICT,
        StaleLeaseError: CONFLICT,
        IllegalTransitionError: CONFLICT,
        OrderRefusedError: _UNPROCESSABLE,
        QueueLimitError: Answer(429, "Too Many Requests", fields=("problems",)),
    }
)
_PLURAL = {"apps": "app", "datasets": "dataset", "workerpools": "workerpool"}


class Waiters:
    """Claims waiting for a pool's queue to gain a task (event loop only)."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    def event(self, pool: str) -> asyncio.Event:
        return self.events.setdefault(pool, asyncio.Event())

    def wake(self, pool: str) -> None:
        event = self.events.pop(pool, None)
        if event is not None:
            event.set()


class HubRoutes:
    def __init__(self, hub: Hub, clock: Clock, checker: OrderChecker | None) -> None:
        self.hub = hub
        self.h = Handlers(hub.engine, hub.audience, clock, "hub")
        self.checker = checker
        self.waiters = Waiters()
        self.writes = GroupCommit(self.h, begin=hub.begin)  # every task write

    def routes(self) -> list[Route]:
        return [
            info_route(self.hub.info, self.hub.signing_key.sign),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/records", self.put_record, methods=["PUT"]),
            Route("/v1/records/{address}", self.get_record, methods=["GET"]),
            *(Route(f"/v1/{plural}", self.list_records, methods=["GET"]) for plural in _PLURAL),
            *(
                Route(f"/v1/{plural}/{{address}}", self.get_view, methods=["GET"])
                for plural in _PLURAL
            ),
            Route("/v1/tasks", self.tasks, methods=["GET", "POST"]),
            Route("/v1/tasks/{task}", self.get_task, methods=["GET"]),
            Route("/v1/tasks/{task}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/tasks/{task}/heartbeat", self.heartbeat, methods=["POST"]),
            Route("/v1/tasks/{task}/status", self.status, methods=["POST"]),
            Route("/v1/tasks/{task}/grants", self.grants, methods=["POST"]),
            Route("/v1/tasks/{task}/release", self.release, methods=["POST"]),
            Route("/v1/workerpools/{pool}/claim", self.claim, methods=["POST"]),
        ]

    # Public
    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def get_record(self, request: Request) -> Response:
        address = path_address(request.path_params["address"])
        signed = await self.h.blocking(self.hub.record, address)
        if signed is None:
            raise HttpProblemError(404, "Not Found", f"no record {address}")
        return JSONResponse(signed.to_json())

    async def list_records(self, request: Request) -> Response:
        kind = _PLURAL[request.url.path.rsplit("/", 1)[1]]
        owner = request.query_params.get("owner")
        found = await self.h.blocking(
            self.hub.records_of, kind, None if owner is None else path_address(owner)
        )
        return JSONResponse([record_view(s) for s in found])

    async def get_view(self, request: Request) -> Response:
        kind = _PLURAL[request.url.path.split("/")[2]]
        address = path_address(request.path_params["address"])
        signed = await self.h.blocking(self.hub.record, address)
        if signed is None or signed.record.kind != kind:
            raise HttpProblemError(404, "Not Found", f"no {kind} {address}")
        return JSONResponse(record_view(signed))

    async def get_task(self, request: Request) -> Response:
        task_id = _task_id(request.path_params["task"])
        found = await self.h.blocking(self.hub.task_view, task_id)
        if found is None:
            raise HttpProblemError(404, "Not Found", f"no task {task_id}")
        return JSONResponse(found)

    async def tasks(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.queue(request)
        params = request.query_params
        status = params.get("status")
        if status is not None and status not in STATUSES:
            raise HttpProblemError(400, "Bad Request", f"unknown status {status!r}")
        filters: dict[str, Any] = {
            "requester": _optional_address(params.get("requester")),
            "workerpool": _optional_address(params.get("workerpool")),
            "status": status,
            "limit": _integer(params.get("limit"), "limit", 1, 1000, 100),
        }
        return JSONResponse(await self.h.blocking(self.hub.task_list, **filters))

    # Signed
    async def put_record(self, request: Request) -> Response:
        body = await read_body(request, RECORD_BODY_LIMIT)
        return await self.h.blocking(self._put_record, request, body)

    def _put_record(self, request: Request, body: bytes) -> Response:
        with self.h.signed_request(request, body) as signed:
            signed_record = SignedRecord.from_json(json_object(body, 6))
            signed_record.verify(self.hub.deployment_id)  # a forged record: 422, named
            owner = signed_record.record.owner
            if signed.address != owner:
                raise HttpProblemError(
                    403,
                    "Forbidden",
                    f"a record is sent by its owner {owner}, not by {signed.address}",
                )
            record = self.hub.put_record(
                signed_record, self.h.now(), actor=signed.address, before=signed.record_in
            )
        answer = {"address": record.address, "kind": record.kind, "sequence": record.sequence}
        return JSONResponse(answer)

    async def queue(self, request: Request) -> Response:
        body = await read_body(request, SMALL_BODY_LIMIT)
        async with self.h.signed_request_async(request, body) as signed:
            document = json_object(body, 8)
            signature = document.get("signature")
            if set(document) != {"order", "signature"} or not isinstance(signature, str):
                raise HttpProblemError(
                    400, "Bad Request", 'expected {"order": {…}, "signature": "0x…"}'
                )
            try:
                order = TaskOrder.from_json(document["order"])
            except TaskOrderError as exc:
                raise OrderRefusedError([str(exc)]) from None
            if signed.address != order.requester:
                raise HttpProblemError(
                    403,
                    "Forbidden",
                    f"a task order is sent by its requester {order.requester}, "
                    f"not by {signed.address}",
                )
            existing = await self.h.blocking(self.hub.task_view, order.task_id())
            if existing is not None:
                await self.h.blocking(signed.record)
                return JSONResponse({"task": existing["task"], "status": existing["status"]})
            problems: list[str] = []
            if self.checker is not None:
                problems = await self.checker(order.to_json(), signature)

            def work(connection: Connection, signed: Signed) -> tuple[dict[str, Any], bool]:
                return self.hub.queue(
                    order,
                    signature,
                    signed.now,
                    sms_problems=problems,
                    before=signed.record_in,
                    within=connection,
                )

            view, created = await self.writes.submit(signed, work)
        if created:
            self.waiters.wake(order.workerpool)
        answer = {"task": view["task"], "status": view["status"]}
        return JSONResponse(answer, status_code=201 if created else 200)

    async def cancel(self, request: Request) -> Response:
        task_id = _task_id(request.path_params["task"])
        body = await read_body(request, SMALL_BODY_LIMIT)
        return await self.h.blocking(self._cancel, request, body, task_id)

    def _cancel(self, request: Request, body: bytes, task_id: str) -> Response:
        with self.h.signed_request(request, body) as signed:
            view = self.hub.cancel(task_id, signed.address, self.h.now(), before=signed.record_in)
        return JSONResponse(view)

    async def grants(self, request: Request) -> Response:
        task_id = _task_id(request.path_params["task"])
        body = await read_body(request, SMALL_BODY_LIMIT)
        return await self.h.blocking(self._grants, request, body, task_id)

    def _grants(self, request: Request, body: bytes, task_id: str) -> Response:
        with self.h.signed_request(request, body) as signed:
            granted = self.hub.task_grants(
                task_id, signed.address, self.h.now(), before=signed.record_in
            )
        return JSONResponse(granted)

    async def heartbeat(self, request: Request) -> Response:
        expires = await self._by_lease_holder(request, self.hub.heartbeat)
        return JSONResponse({"lease_expires_at": expires})

    async def release(self, request: Request) -> Response:
        view = await self._by_lease_holder(request, self.hub.release)
        if view["status"] == "RECEIVED":
            self.waiters.wake(view["workerpool"])
        return JSONResponse(view)

    async def _by_lease_holder(self, request: Request, call: Callable[..., T]) -> T:
        """``call(task, worker, lease_token, now, …)`` for a signed body
        ``{"lease_token"}`` (a heartbeat, a lease given back), in the next batch."""
        task_id = _task_id(request.path_params["task"])
        body = await read_body(request, SMALL_BODY_LIMIT)

        def work(connection: Connection, signed: Signed) -> T:
            token = _token(json_object(body, 4), {"lease_token"})
            return call(
                task_id,
                signed.address,
                token,
                signed.now,
                before=signed.record_in,
                within=connection,
            )

        return await self.writes.run(request, body, work)

    async def status(self, request: Request) -> Response:
        task_id = _task_id(request.path_params["task"])
        body = await read_body(request, SMALL_BODY_LIMIT)

        def work(connection: Connection, signed: Signed) -> dict[str, Any]:
            report = _report(json_object(body, 6))
            return self.hub.report(
                task_id,
                signed.address,
                report,
                signed.now,
                before=signed.record_in,
                within=connection,
            )

        return JSONResponse(await self.writes.run(request, body, work))

    async def claim(self, request: Request) -> Response:
        pool = path_address(request.path_params["pool"])
        wait = _integer(request.query_params.get("wait"), "wait", 0, MAX_WAIT_SECONDS, 0)
        body = await read_body(request, SMALL_BODY_LIMIT)

        def first(connection: Connection, signed: Signed) -> tuple[str, Claimed | None]:
            claimed = self.hub.claim(
                pool, signed.address, signed.now, before=signed.record_in, within=connection
            )
            return signed.address, claimed

        worker, claimed = await self.writes.run(request, body, first)
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while claimed is None and loop.time() < until:
            event = self.waiters.event(pool)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(until - loop.time(), RECHECK_SECONDS))
            claimed = await self.h.blocking(self.hub.claim, pool, worker, self.h.now())
        if claimed is None:
            return Response(status_code=204)
        return JSONResponse(
            {
                "task": claimed.view,
                "lease_token": claimed.lease.token,
                "lease_expires_at": claimed.lease.expires_at,
                "grants": claimed.grants,
            }
        )

    async def sweep_forever(self, interval: float) -> None:
        """Requeue expired leases and time out late tasks, every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                pools = await self.h.blocking(self.hub.sweep, self.h.now())
            except Exception:  # the next round tries again; a claim sweeps too
                _log.warning("the hub's sweep failed; retried in %.0f s", interval, exc_info=True)
                continue
            for pool in pools:
                self.waiters.wake(pool)


def create_app(
    hub: Hub,
    clock: Clock,
    limits: Limits | None = None,
    order_checker: OrderChecker | None = None,
    sweep_interval: float = 1.0,
) -> Starlette:
    """The hub's ASGI app. ``order_checker``: asks the sms for an order's secrets
    problems (default: ``POST {sms_url}/v1/task-orders/check``; none without an sms)."""
    if order_checker is None and hub.config.sms_url:
        order_checker = http_order_checker(hub.config.sms_url)
    routes = HubRoutes(hub, clock, order_checker)
    health = Health(database_probe(hub.engine))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        sweeper = asyncio.create_task(routes.sweep_forever(sweep_interval))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            health.close()
            await routes.h.stop_database_threads()

    return Starlette(
        routes=[*health.routes(), *routes.routes()],
        exception_handlers=exception_handlers(PROBLEMS, "hub", _log),
        lifespan=lifespan,
        middleware=[Middleware(BodyLimits, clock=clock, unsigned_bodies=_no_path, limits=limits)],
    )


def _no_path(path: str) -> bool:
    """Every body the hub takes is signed."""
    del path
    return False


def _task_id(text: str) -> str:
    lowered = text.lower()
    if len(lowered) != 66 or not lowered.startswith("0x") or not _hex(lowered[2:]):
        raise HttpProblemError(400, "Bad Request", "a task id is 0x and 64 hex digits")
    return lowered


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _optional_address(text: str | None) -> str | None:
    return None if text is None else path_address(text)


def _integer(text: str | None, name: str, low: int, high: int, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise HttpProblemError(400, "Bad Request", f"{name} is an integer from {low} to {high}")
    return int(text)


def _token(document: dict[str, Any], allowed: set[str]) -> str:
    token = document.get("lease_token")
    if not set(document) <= allowed or not isinstance(token, str) or len(token) > 64:
        raise HttpProblemError(
            400, "Bad Request", f"expected the fields {sorted(allowed)} with a lease_token"
        )
    return token


def _report(document: dict[str, Any]) -> Report:
    allowed = {"lease_token", "status", "cause", "result_digest", "result_blob", "via", "result"}
    token = _token(document, allowed)
    status, via = document.get("status"), document.get("via", [])
    if not isinstance(status, str) or not isinstance(via, list) or len(via) > 8:
        raise HttpProblemError(400, "Bad Request", "status is a string, via a list of them")
    texts = [document.get(k) for k in ("cause", "result_digest", "result_blob")]
    if not all(isinstance(v, str) for v in via) or not all(
        t is None or (isinstance(t, str) and len(t) <= 64) for t in texts
    ):
        raise HttpProblemError(400, "Bad Request", "cause and result fields are short strings")
    cause, digest, blob = texts
    result = document.get("result")
    try:
        kept = None if result is None else check_result(result)
    except TaskError as exc:
        raise HttpProblemError(400, "Bad Request", str(exc)) from None
    return Report(token, status, cause, digest, blob, tuple(via), kept)
