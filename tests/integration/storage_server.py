"""A real storage on a free loopback port (in a thread), and a signing client for tests."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.storage.backend import Backend
from confide.storage.http import create_app
from confide.storage.local import LocalBackend
from confide.storage.service import Storage, StorageConfig
from confide.web.limits import Limits
from confide.web.server import make_server
from tests.integration.sms_server import free_port


@dataclass
class RunningStorage:
    url: str
    storage: Storage
    audience: str

    def put(
        self,
        wallet: Wallet,
        data: bytes,
        digest: str | None = None,
        *,
        now: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """PUT ``data`` as blob ``digest`` (default: its SHA-256), signed by ``wallet``
        (over ``digest`` when it is one, else over the data's)."""
        actual = hashlib.sha256(data).hexdigest()
        digest = digest or actual
        path = f"/v1/blobs/{digest}"
        signed = sign_request(
            wallet,
            audience=self.audience,
            method="PUT",
            path=path,
            content_type="application/octet-stream",
            body_sha256=digest if re.fullmatch("[0-9a-f]{64}", digest) else actual,
            now=now or int(time.time()),
        )
        sent = {"content-type": "application/octet-stream", **signed, **(headers or {})}
        return httpx.put(self.url + path, content=data, headers=sent, timeout=60)

    def signed_get(
        self,
        wallet: Wallet,
        digest: str,
        *,
        method: str = "GET",
        grant: str | None = None,
        byte_range: str | None = None,
    ) -> tuple[httpx.Response, dict[str, str]]:
        """A signed GET (or HEAD) of blob ``digest``; the response and the headers sent."""
        path = f"/v1/blobs/{digest}"
        headers = sign_request(
            wallet, audience=self.audience, method=method, path=path, now=int(time.time())
        )
        if grant is not None:
            headers["X-Confide-Grant"] = grant
        if byte_range is not None:
            headers["Range"] = byte_range
        return httpx.request(method, self.url + path, headers=headers, timeout=60), headers

    def get(self, wallet: Wallet, digest: str, **kwargs: str | None) -> httpx.Response:
        return self.signed_get(wallet, digest, **kwargs)[0]  # type: ignore[arg-type]


@contextmanager
def running_storage(
    home: Path,
    db_url: str,
    *,
    backend: Backend | None = None,
    issuers: Mapping[str, bytes] | None = None,
    quota_bytes: int = 1 << 30,
    max_blob_bytes: int = 1 << 30,
    clock: Callable[[], float] = time.time,
    limits: Limits | None = None,
) -> Iterator[RunningStorage]:
    config = StorageConfig(
        home=home / "storage",
        db_url=db_url,
        deployment_id="test",
        quota_bytes=quota_bytes,
        max_blob_bytes=max_blob_bytes,
    )
    storage = Storage(config, backend or LocalBackend(home / "blobs"), issuers or {})
    port = free_port()
    server = make_server(
        create_app(storage, clock, limits), host="127.0.0.1", port=port, limits=limits
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the storage did not start")
        time.sleep(0.01)
    try:
        yield RunningStorage(f"http://127.0.0.1:{port}", storage, storage.audience)
    finally:
        server.should_exit = True
        thread.join(20)
        storage.engine.dispose()
