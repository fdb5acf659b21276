"""HTTP routes for what owners and requesters tell the sms directly, so that a hub cannot
withhold it: owner-signed records (``POST /v1/records``) and task cancels
(``POST /v1/task-cancels``). Both are signed requests, handled inside ``signed_request``
(a refusal uses the nonce up)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.records import MAX_RECORD_BYTES, RecordError, SignedRecord
from confide.sms.http_attest import ORDER_BODY_LIMIT
from confide.sms.http_common import SmsHandlers
from confide.sms.hub_registry import HubRegistry
from confide.sms.task_cancels import cancel_task
from confide.sms.tasks import TaskOrder
from confide.web.bodies import json_object, read_body
from confide.web.problems import HttpProblemError


class RecordHandlers:
    def __init__(self, base: SmsHandlers) -> None:
        self.base = base
        self.sms = base.sms

    def routes(self) -> list[Route]:
        return [
            Route("/v1/records", self.push_record, methods=["POST"]),
            Route("/v1/task-cancels", self.cancel, methods=["POST"]),
        ]

    async def push_record(self, request: Request) -> Response:
        """A record signed by its owner and pushed by its owner: kept when its sequence
        is above the kept one (200), 409 otherwise, 422 naming a record that is
        malformed or forged, 403 when the signer is not its owner."""
        body = await read_body(request, MAX_RECORD_BYTES + 1024)
        return await self.base.blocking(self._push_record, request, body)

    def _push_record(self, request: Request, body: bytes) -> Response:
        with self.base.signed_request(request, body) as signed:
            try:
                signed_record = SignedRecord.from_json(json_object(body, 8))
            except HttpProblemError as exc:
                raise RecordError(f"a record is a JSON object: {exc.detail}") from None
            registry = self.sms.registry
            record = self.sms.records.push(
                signed_record, signed, self.base.now(), self.sms.hub_deployment()
            )
            if isinstance(registry, HubRegistry):
                registry.learn(record)
        self.base.maybe_prune()
        return JSONResponse(
            {"address": record.address, "kind": record.kind, "sequence": record.sequence}
        )

    async def cancel(self, request: Request) -> Response:
        """The requester cancels a task: ``{"order": TaskOrder JSON, "signature"}``."""
        body = await read_body(request, ORDER_BODY_LIMIT)
        return await self.base.blocking(self._cancel, request, body)

    def _cancel(self, request: Request, body: bytes) -> Response:
        with self.base.signed_request(request, body) as signed:
            document = json_object(body, 6)
            if set(document) != {"order", "signature"} or not isinstance(
                document["signature"], str
            ):
                raise HttpProblemError(400, "Bad Request", 'expected {"order": {...}, "signature"}')
            order = TaskOrder.from_json(document["order"])
            at = cancel_task(self.sms, order, document["signature"], signed, self.base.now())
        self.base.maybe_prune()
        return JSONResponse({"task": order.task_id(), "cancelled_at": at})
