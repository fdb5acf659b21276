"""The embedded platform: hub at the root, sms at ``/sms``, storage at ``/storage``.

Each service is its own ``create_app``; :class:`PrefixRouter` hands a request to the one
its path prefix names, with the prefix taken off ``scope["path"]`` (so each service's
routes and body limits see their own paths) and kept in ``raw_path`` (what a client
signed: the path as it sent it). SQLite files and blobs live under ``$CONFIDE_HOME/up``;
the sms accepts simulation (it protects nothing from this machine's owner), reads the hub
in process (and still verifies every record), and the storage trusts the grant keys of
this hub and sms. A default workerpool, owned by an operator wallet kept in
``up/operator-wallet.json`` (never the user's wallet), is registered at first start.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from confide.crypto.wallet import Wallet, load_wallet, save_wallet
from confide.records import OwnerRecord

DEFAULT_PORT = 8088
DEFAULT_POOL = "default"
SMS_PREFIX, STORAGE_PREFIX = "/sms", "/storage"


@dataclass
class Embedded:
    """The three services of ``confide up`` and the one ASGI app that serves them."""

    app: ASGIApp
    hub: Any  # confide.hub.service.Hub
    sms: Any  # confide.sms.service.Sms
    storage: Any  # confide.storage.service.Storage
    base_url: str
    pool: str  # the default workerpool's address
    operator: str  # the operator wallet's address
    limits: Any  # confide.web.limits.Limits: the apps' body limits and the server's
    signer: Wallet | None = None  # the operator wallet (its workers sign with it)

    def close(self) -> None:
        for service in (self.hub, self.sms, self.storage):
            service.engine.dispose()


class PrefixRouter:
    """Send ``/sms/…`` to the sms, ``/storage/…`` to the storage, the rest to the hub; the
    lifespan starts and stops all three."""

    def __init__(self, root: ASGIApp, mounts: dict[str, ASGIApp]) -> None:
        self.root = root
        self.mounts = mounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path: str = scope.get("path", "")
        for prefix, app in self.mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                inner = dict(scope)
                inner["path"] = path[len(prefix) :] or "/"
                inner["root_path"] = scope.get("root_path", "") + prefix
                await app(inner, receive, send)
                return
        await self.root(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with contextlib.AsyncExitStack() as stack:
            try:
                for app in (self.root, *self.mounts.values()):
                    context = app.router.lifespan_context(app)  # type: ignore[attr-defined]
                    await stack.enter_async_context(context)
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": type(exc).__name__})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def operator_wallet(up: Path) -> Wallet:
    """The operator's wallet (``up/operator-wallet.json``, its password beside it in a
    0600 file): made at first start, never the user's ``wallet.json``."""
    keystore, secret = up / "operator-wallet.json", up / "operator-wallet.password"
    if not keystore.exists():
        password = os.urandom(16).hex()
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        save_wallet(keystore, Wallet.generate(), password)
    return load_wallet(keystore, secret.read_text().strip())


def compose(
    home: Path, port: int, clock: Callable[[], float] = time.time, *, lease_seconds: int = 60
) -> Embedded:
    """Build (and at first start, set up) the embedded platform under ``home/up``
    (``lease_seconds``: the hub's lease, shorter in tests of expiry)."""
    from confide.db import make_engine  # noqa: PLC0415
    from confide.hub.http import create_app as hub_app  # noqa: PLC0415
    from confide.hub.service import Hub, HubConfig  # noqa: PLC0415
    from confide.sms.http import create_app as sms_app  # noqa: PLC0415
    from confide.sms.hub_registry import HubRegistry  # noqa: PLC0415
    from confide.sms.service import Sms, SmsConfig  # noqa: PLC0415
    from confide.storage.http import create_app as storage_app  # noqa: PLC0415
    from confide.storage.local import LocalBackend  # noqa: PLC0415
    from confide.storage.service import Storage, StorageConfig  # noqa: PLC0415
    from confide.up.inprocess import HubRecordSource, sms_order_checker  # noqa: PLC0415
    from confide.web.limits import Limits  # noqa: PLC0415

    up = home / "up"
    up.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = f"http://127.0.0.1:{port}"
    hub = Hub(
        HubConfig(
            home=up / "hub",
            db_url=f"sqlite:///{up / 'hub.db'}",
            sms_url=base + SMS_PREFIX,
            storage_url=base + STORAGE_PREFIX,
            embedded=True,
            lease_seconds=lease_seconds,
        )
    )
    sms_url = f"sqlite:///{up / 'sms.db'}"
    sms_engine = make_engine(sms_url)
    registry = HubRegistry(sms_engine, HubRecordSource(hub), hub.deployment_id)
    sms = Sms(
        SmsConfig(home=up / "sms", db_url=sms_url, allow_sim=True, hub_url=base),
        engine=sms_engine,
        registry=registry,
    )
    issuers = {
        hub.audience: hub.signing_key.public_bytes(),
        sms.audience: sms.tokens.public_key(),
    }
    storage = Storage(
        StorageConfig(home=up / "storage", db_url=f"sqlite:///{up / 'storage.db'}"),
        LocalBackend(up / "blobs"),
        issuers,
    )
    operator = operator_wallet(up)
    pool = default_pool(hub, operator, clock)
    limits = Limits()
    app = PrefixRouter(
        hub_app(hub, clock, limits=limits, order_checker=sms_order_checker(sms, clock)),
        {
            SMS_PREFIX: sms_app(sms, clock, limits=limits),
            STORAGE_PREFIX: storage_app(storage, clock, limits=limits),
        },
    )
    return Embedded(app, hub, sms, storage, base, pool, operator.address, limits, operator)


def default_pool(hub: Any, operator: Wallet, clock: Callable[[], float]) -> str:
    """The address of the operator's workerpool ``default``, registered if it is not."""
    record = OwnerRecord.workerpool(
        hub.deployment_id, operator.address, DEFAULT_POOL, members={operator.address}
    )
    if hub.record(record.address) is None:
        hub.put_record(record.sign(operator), int(clock()))
    return record.address
