"""The storage mounted under a prefix, as ``confide up`` mounts it at ``/storage``: a
blob upload larger than the JSON body limit still streams (the edge routes by the path
without the mount's prefix), signed over the full path the client sends."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.storage.http import create_app
from confide.storage.local import LocalBackend
from confide.storage.service import Storage, StorageConfig
from confide.web.server import make_server
from tests.integration.sms_server import free_port

OWNER = Wallet.generate()


def test_a_mounted_storage_streams_blobs_past_the_body_limit(
    tmp_path: Path, database_url: str
) -> None:
    storage = Storage(
        StorageConfig(home=tmp_path / "home", db_url=database_url, deployment_id="up"),
        LocalBackend(tmp_path / "blobs"),
        {},
    )
    parent = Starlette(routes=[Mount("/storage", app=create_app(storage, time.time))])
    port = free_port()
    server = make_server(parent, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        data = os.urandom(3 << 20)  # past the 1 MiB a JSON route takes
        digest = hashlib.sha256(data).hexdigest()
        path = f"/storage/v1/blobs/{digest}"
        url = f"http://127.0.0.1:{port}{path}"
        headers = sign_request(
            OWNER,
            audience=storage.audience,
            method="PUT",
            path=path,
            content_type="application/octet-stream",
            body_sha256=digest,
            now=int(time.time()),
        )
        headers["content-type"] = "application/octet-stream"
        put = httpx.put(url, content=data, headers=headers, timeout=30)
        assert put.status_code == 201, put.text
        read = sign_request(
            OWNER, audience=storage.audience, method="GET", path=path, now=int(time.time())
        )
        got = httpx.get(url, headers=read, timeout=30)
        assert (got.status_code, got.content) == (200, data)
        info = httpx.get(f"http://127.0.0.1:{port}/storage/v1/info").json()
        assert info["service"] == "storage"
    finally:
        server.should_exit = True
        thread.join(20)
        storage.engine.dispose()
