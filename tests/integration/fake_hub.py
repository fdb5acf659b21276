"""A stand-in hub for the sms's tests, and signed requests the sms client does not make
yet: a real Starlette app on a free loopback port serving ``GET /v1/info``,
``GET /v1/records/{address}`` and ``GET /v1/tasks/{task}`` from dicts the test edits
(so a test plays a hub that lies: forges, replays, withholds, rewrites)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.records import SignedRecord
from confide.sms.tasks import TaskOrder
from tests.integration.sms_server import audience_of, free_port


@dataclass
class FakeHub:
    """What the hub serves: edit ``records`` (address -> SignedRecord JSON) and ``tasks``
    (task id -> the GET /v1/tasks/{task} document) to make it say anything."""

    deployment: str = "hub-test"
    url: str = ""
    records: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)  # paths asked, in order
    failing: bool = False  # answer every record and task 503 (a hub in trouble)

    def put(self, signed: SignedRecord) -> str:
        self.records[signed.address] = signed.to_json()
        return signed.address

    def put_task(self, order: TaskOrder, signature: str, lease: str | None, worker: str) -> str:
        task_id = order.task_id()
        self.tasks[task_id] = task_document(task_id, order, signature, lease, worker)
        return task_id

    def app(self) -> Starlette:
        async def info(request: Request) -> Response:
            return JSONResponse({"service": "hub", "deployment_id": self.deployment})

        async def record(request: Request) -> Response:
            address = request.path_params["address"]
            self.fetched.append(f"/v1/records/{address}")
            if self.failing:
                return Response(status_code=503)
            found = self.records.get(address)
            return JSONResponse(found) if found is not None else Response(status_code=404)

        async def task(request: Request) -> Response:
            task_id = request.path_params["task"]
            self.fetched.append(f"/v1/tasks/{task_id}")
            if self.failing:
                return Response(status_code=503)
            found = self.tasks.get(task_id)
            return JSONResponse(found) if found is not None else Response(status_code=404)

        return Starlette(
            routes=[
                Route("/v1/info", info),
                Route("/v1/records/{address}", record),
                Route("/v1/tasks/{task}", task),
            ]
        )


def task_document(
    task_id: str, order: TaskOrder, signature: str, lease: str | None, worker: str
) -> dict[str, Any]:
    """A task as the hub's ``GET /v1/tasks/{task}`` shows it (the fields the sms reads,
    and the others)."""
    return {
        "task": task_id,
        "status": "CLAIMED" if lease else "RECEIVED",
        "cause": None,
        "requester": order.requester,
        "app": order.app,
        "workerpool": order.workerpool,
        "dataset": order.dataset,
        "category": order.category,
        "attempts": 1,
        "max_attempts": order.max_attempts,
        "created_at": 0,
        "deadline": None,
        "valid_until": order.valid_until,
        "result_digest": None,
        "result_blob": None,
        "order": order.to_json(),
        "signature": signature,
        "lease": None
        if lease is None
        else {"token": lease, "worker": worker, "expires_at": int(time.time()) + 60},
    }


@contextmanager
def running_hub(hub: FakeHub | None = None) -> Iterator[FakeHub]:
    hub = hub or FakeHub()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(hub.app(), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake hub did not start")
        time.sleep(0.01)
    hub.url = f"http://127.0.0.1:{port}"
    try:
        yield hub
    finally:
        server.should_exit = True
        thread.join(20)


def signed_post(base: str, wallet: Wallet, path: str, document: Any) -> httpx.Response:
    """``document`` POSTed as JSON to the sms at ``base``, signed by ``wallet``."""
    body = json.dumps(document).encode()
    headers = sign_request(
        wallet,
        audience=audience_of(base),
        method="POST",
        path=path,
        content_type="application/json",
        body=body,
        now=int(time.time()),
    )
    headers["content-type"] = "application/json"
    return httpx.post(base + path, content=body, headers=headers)


def push_record(base: str, signed: SignedRecord, by: Wallet) -> httpx.Response:
    """``POST /v1/records``: what ``SmsClient.push_record`` will send."""
    return signed_post(base, by, "/v1/records", signed.to_json())


def cancel_task(base: str, order: TaskOrder, signature: str, by: Wallet) -> httpx.Response:
    """``POST /v1/task-cancels``: what ``SmsClient.cancel_task`` will send."""
    return signed_post(
        base, by, "/v1/task-cancels", {"order": order.to_json(), "signature": signature}
    )
