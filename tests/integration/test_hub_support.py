"""Helpers of the hub's tests (no tests here): a real hub on a loopback port (in a thread,
or a subprocess: ``python -m tests.integration.test_hub_support``), a signing caller,
records and orders.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from confide.attestation.measurement import Measurement
from confide.crypto.requests import canonical_query, sign_request
from confide.crypto.wallet import Wallet
from confide.hub.checker import OrderChecker
from confide.hub.http import create_app
from confide.hub.service import Hub, HubConfig
from confide.records import OwnerRecord, SignedRecord
from confide.sms.tasks import TaskOrder
from tests.integration.sms_server import free_port

MEASUREMENT = Measurement.parse("sim:" + "ab" * 32)
SMS_KEY = "cd" * 32


class Clock:
    """A clock the test moves (seconds); starts at the real time."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class HubCaller:
    """Signed and public calls to one hub."""

    base: str
    audience: str
    clock: Clock
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    app: Any = None  # the ASGI app, when served in this process

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(self.base + path, params=params)

    def signed(
        self,
        wallet: Wallet,
        method: str,
        path: str,
        document: Any = None,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        if body is None:
            body = b"" if document is None else httpx.Request("POST", "/", json=document).content
        content_type = "application/json" if body else ""
        headers = sign_request(
            wallet,
            audience=self.audience,
            method=method,
            path=path,
            query=canonical_query(params or {}),
            content_type=content_type,
            body=body,
            now=int(self.clock()),
        )
        if content_type:
            headers["content-type"] = content_type
        return self.client.request(
            method, self.base + path, content=body, headers=headers, params=params
        )

    def put_record(self, wallet: Wallet, signed: SignedRecord) -> httpx.Response:
        return self.signed(wallet, "PUT", "/v1/records", signed.to_json())

    def queue(
        self, wallet: Wallet, order: TaskOrder, signature: str | None = None
    ) -> httpx.Response:
        document = {"order": order.to_json(), "signature": signature or order.sign(wallet)}
        return self.signed(wallet, "POST", "/v1/tasks", document)

    def claim(self, wallet: Wallet, pool: str, wait: int = 0) -> httpx.Response:
        params = {"wait": str(wait)} if wait else None
        return self.signed(wallet, "POST", f"/v1/workerpools/{pool}/claim", params=params)

    def report(
        self, wallet: Wallet, task: str, token: str, status: str, **extra: Any
    ) -> httpx.Response:
        document = {"lease_token": token, "status": status, **extra}
        return self.signed(wallet, "POST", f"/v1/tasks/{task}/status", document)


@dataclass
class World:
    """Wallets and the records of one deployment: an app, a dataset, a pool."""

    deployment: str
    developer: Wallet = field(default_factory=Wallet.generate)
    owner: Wallet = field(default_factory=Wallet.generate)  # of the pool and the dataset
    worker: Wallet = field(default_factory=Wallet.generate)
    requester: Wallet = field(default_factory=Wallet.generate)
    stranger: Wallet = field(default_factory=Wallet.generate)

    def app(self, **kw: Any) -> SignedRecord:
        record = OwnerRecord.app(
            self.deployment,
            self.developer.address,
            kw.pop("name", "app"),
            bundle=kw.pop("bundle", "11" * 32),
            measurement=kw.pop("measurement", MEASUREMENT),
            **kw,
        )
        return record.sign(self.developer)

    def dataset(self, **kw: Any) -> SignedRecord:
        record = OwnerRecord.dataset(
            self.deployment,
            self.owner.address,
            kw.pop("name", "data"),
            blob=kw.pop("blob", "22" * 32),
            checksum=kw.pop("checksum", "33" * 32),
            **kw,
        )
        return record.sign(self.owner)

    def pool(self, **kw: Any) -> SignedRecord:
        members = kw.pop("members", [self.worker.address])
        record = OwnerRecord.workerpool(
            self.deployment, self.owner.address, kw.pop("name", "pool"), members=members, **kw
        )
        return record.sign(self.owner)

    def order(self, now: float, **kw: Any) -> TaskOrder:
        fields: dict[str, Any] = {
            "requester": self.requester.address,
            "app": self.app().address,
            "app_measurement": MEASUREMENT,
            "tee": ("sim",),
            "tolerate": ("simulation",),
            "ignore_advisories": (),
            "secrets": (),
            "dataset": None,
            "result_key": None,
            "encrypt_result": False,
            "sms_key": SMS_KEY,
            "workerpool": self.pool().address,
            "salt": os.urandom(16).hex(),
            "valid_until": int(now) + 3600,
        }
        fields.update(kw)
        return TaskOrder(**fields)

    def register(self, caller: HubCaller) -> None:
        for wallet, signed in (
            (self.developer, self.app()),
            (self.owner, self.dataset()),
            (self.owner, self.pool()),
        ):
            answer = caller.put_record(wallet, signed)
            assert answer.status_code == 200, answer.text


def make_hub(home: Path, db_url: str, deployment: str = "test", **kw: Any) -> Hub:
    return Hub(HubConfig(home=home, db_url=db_url, deployment_id=deployment, **kw))


@contextmanager
def running_hub(
    hub: Hub,
    clock: Clock,
    *,
    order_checker: OrderChecker | None = None,
    sweep_interval: float = 3600.0,
) -> Iterator[HubCaller]:
    """``hub`` served on a free loopback port in a thread; its caller."""
    app = create_app(hub, clock, order_checker=order_checker, sweep_interval=sweep_interval)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the hub did not start")
        time.sleep(0.01)
    caller = HubCaller(f"http://127.0.0.1:{port}", hub.audience, clock, app=app)
    try:
        yield caller
    finally:
        caller.client.close()
        server.should_exit = True
        thread.join(20)
        hub.engine.dispose()


def main() -> None:
    """Serve a hub in this process (what the fault tests start, kill and restart)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lease-seconds", type=int, default=60)
    parser.add_argument("--max-queued", type=int, default=100_000)
    args = parser.parse_args()
    hub = make_hub(
        Path(args.home), args.db, lease_seconds=args.lease_seconds, max_queued=args.max_queued
    )
    app = create_app(hub, time.time)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error")


if __name__ == "__main__":
    main()
