"""Whose grants the storage accepts (``--trust URL``: each service's /v1/info, proven),
and uploads that race for one quota."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from confide.crypto.info_proof import jwks_key
from confide.crypto.wallet import Wallet
from confide.errors import ConfideError
from confide.grants import Grant, issue_grant
from confide.storage.trust import fetch_issuer, fetch_issuers
from tests.integration.sms_server import free_port, running_sms
from tests.integration.storage_server import running_storage

OWNER = Wallet.generate()
READER = Wallet.generate()


def test_a_trusted_sms_key_signs_grants_the_storage_accepts(
    tmp_path: Path, database_url: str
) -> None:
    with running_sms(tmp_path / "sms", database_url, deployment="trusted") as sms_url:
        issuers = fetch_issuers([sms_url])
        info = httpx.get(sms_url + "/v1/info").json()
        assert issuers == {info["audience"]: jwks_key(info["jwks"])}
    with running_storage(tmp_path, database_url, issuers=issuers) as store:
        data = os.urandom(1000)
        digest = hashlib.sha256(data).hexdigest()
        assert store.put(OWNER, data).status_code == 201
        assert httpx.get(store.url + "/v1/info").json()["issuers"] == [info["audience"]]
        # a grant under the sms's audience, signed by a key that is not the sms's
        from confide.crypto.signing import SigningKey

        forged = issue_grant(
            SigningKey.generate(),
            Grant(digest, READER.address, info["audience"], int(time.time()) + 600, OWNER.address),
        )
        refused = store.get(READER, digest, grant=forged)
        assert refused.status_code == 403
        assert "signature does not verify" in refused.json()["detail"]


def test_a_storage_trusting_another_storage_reads_its_proven_key(
    tmp_path: Path, database_url: str
) -> None:
    with running_storage(tmp_path / "a", database_url) as other:
        audience, key = fetch_issuer(other.url)
        assert audience == other.audience
        assert key == other.storage.signing_key.public_bytes()


def test_an_unreachable_or_unproven_service_is_refused_by_name(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ConfideError, match=f"--trust http://127.0.0.1:{port}: cannot read"):
        fetch_issuers([f"http://127.0.0.1:{port}"], timeout=2)

    async def liar(scope, receive, send):  # type: ignore[no-untyped-def]
        """An info with a key of small order (all zeros), whose zero signature verifies
        under cofactorless Ed25519 for about one challenge in eight: refused, always."""
        if scope["type"] != "http":
            return
        body = (
            b'{"audience": "hub/x/' + b"00" * 32 + b'", "jwks": {"keys": [{"kty": "OKP", '
            b'"crv": "Ed25519", "x": "' + b"A" * 43 + b'"}]}, "proof": "' + b"00" * 64 + b'"}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # The liar's socket is bound here, before the server starts: a port picked free and
    # bound later may meanwhile be another test's (a real service, which proves its key).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(liar, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        with pytest.raises(ConfideError, match="small order: it proves nothing"):
            fetch_issuers([f"http://127.0.0.1:{port}"])
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def test_concurrent_uploads_cannot_overshoot_the_quota(tmp_path: Path, database_url: str) -> None:
    quota = 5 << 20
    with running_storage(tmp_path, database_url, quota_bytes=quota) as store:
        blobs = [os.urandom(2 << 20) for _ in range(6)]
        answers: list[int] = []

        def upload(data: bytes) -> None:
            answers.append(store.put(OWNER, data).status_code)

        threads = [threading.Thread(target=upload, args=(data,)) for data in blobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(answers) == [201, 201] + [507] * 4, answers
        assert store.storage.usage(OWNER.address) == 4 << 20
        kept = [
            data
            for data in blobs
            if store.get(OWNER, hashlib.sha256(data).hexdigest()).status_code == 200
        ]
        assert len(kept) == 2
