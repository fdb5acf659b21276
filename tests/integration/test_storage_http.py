"""The storage over HTTP, on a real server and database: uploads, reads, ranges, grants,
quotas and every refusal."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from confide.crypto.info_proof import check_info_proof, request_audience
from confide.crypto.requests import sign_request
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet
from confide.db.engine import reading
from confide.grants import Grant, issue_grant
from confide.storage.tables import storage_blobs, storage_uploaders
from tests.integration.storage_server import RunningStorage, running_storage

OWNER = Wallet.generate()
OTHER = Wallet.generate()
HUB_KEY = SigningKey.generate()
HUB = request_audience("hub-test", HUB_KEY.public_bytes(), "hub")
QUOTA = 3 << 20
MAX_BLOB = 2 << 20


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[RunningStorage]:
    with running_storage(
        tmp_path,
        database_url,
        issuers={HUB: HUB_KEY.public_bytes()},
        quota_bytes=QUOTA,
        max_blob_bytes=MAX_BLOB,
    ) as running:
        yield running


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def grant(
    digest: str,
    grantee: str,
    *,
    expires_in: int = 600,
    key: SigningKey = HUB_KEY,
    issuer: str = HUB,
    uploader: str = OWNER.address,
) -> str:
    expires_at = int(time.time()) + expires_in
    return issue_grant(key, Grant(digest, grantee, issuer, expires_at, uploader))


def blob_rows(running: RunningStorage, digest: str) -> tuple[int, int]:
    with reading(running.storage.engine) as connection:
        blobs = connection.execute(
            select(func.count()).select_from(storage_blobs).where(storage_blobs.c.digest == digest)
        ).scalar()
        uploaders = connection.execute(
            select(func.count())
            .select_from(storage_uploaders)
            .where(storage_uploaders.c.digest == digest)
        ).scalar()
    return int(blobs or 0), int(uploaders or 0)


def test_upload_download_head_and_ranges(store: RunningStorage) -> None:
    data = os.urandom(1_500_000)
    digest = sha(data)
    put = store.put(OWNER, data)
    assert put.status_code == 201, put.text
    assert put.json() == {"digest": digest, "size": len(data)}

    got = store.get(OWNER, digest)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["accept-ranges"] == "bytes"

    head = store.get(OWNER, digest, method="HEAD")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.content == b""

    part = store.get(OWNER, digest, byte_range="bytes=100-1048675")
    assert part.status_code == 206
    assert part.content == data[100:1048676]
    assert part.headers["content-range"] == f"bytes 100-1048675/{len(data)}"
    tail = store.get(OWNER, digest, byte_range="bytes=-10")
    assert (tail.status_code, tail.content) == (206, data[-10:])
    rest = store.get(OWNER, digest, byte_range="bytes=1499990-")
    assert (rest.status_code, rest.content) == (206, data[1499990:])
    beyond = store.get(OWNER, digest, byte_range="bytes=99999999-")
    assert beyond.status_code == 416
    assert beyond.json()["size"] == len(data)
    for bad in ("bytes=5-2", "items=0-1", "bytes=0-1,4-5", "bytes=-0"):
        refused = store.get(OWNER, digest, byte_range=bad)
        assert refused.status_code == 416, bad
        assert "not one satisfiable range" in refused.json()["detail"]


def test_an_empty_blob(store: RunningStorage) -> None:
    digest = sha(b"")
    assert store.put(OWNER, b"").status_code == 201
    got = store.get(OWNER, digest)
    assert (got.status_code, got.content) == (200, b"")


def test_reupload_is_idempotent_and_counted_once_per_uploader(store: RunningStorage) -> None:
    data = os.urandom(1 << 20)
    digest = sha(data)
    assert store.put(OWNER, data).status_code == 201
    again = store.put(OWNER, data)
    assert again.status_code == 200
    assert again.json() == {"digest": digest, "size": len(data)}
    assert store.storage.usage(OWNER.address) == len(data)
    # another uploader proves he has the bytes: he pays once and may read
    assert store.get(OTHER, digest).status_code == 403
    assert store.put(OTHER, data).status_code == 200
    assert store.storage.usage(OTHER.address) == len(data)
    assert store.get(OTHER, digest).content == data
    assert blob_rows(store, digest) == (1, 2)


def test_bytes_that_do_not_match_the_digest_are_refused_and_nothing_kept(
    store: RunningStorage,
) -> None:
    data = os.urandom(1 << 20)
    claimed = sha(b"something else")
    refused = store.put(OWNER, data, claimed)
    assert refused.status_code == 422
    assert f"not to {claimed}" in refused.json()["detail"]
    assert store.storage.backend.size(claimed) is None
    assert blob_rows(store, claimed) == (0, 0)
    assert store.storage.usage(OWNER.address) == 0
    assert list((store.storage.backend.root / "tmp").iterdir()) == []  # type: ignore[attr-defined]
    assert store.get(OWNER, claimed).status_code == 403


def test_a_mismatched_reupload_of_a_stored_blob_adds_no_uploader(store: RunningStorage) -> None:
    data = os.urandom(1000)
    digest = sha(data)
    assert store.put(OWNER, data).status_code == 201
    forged = store.put(OTHER, os.urandom(1000), digest)  # knows the digest, not the bytes
    assert forged.status_code == 422
    assert store.get(OTHER, digest).status_code == 403
    assert blob_rows(store, digest) == (1, 1)
    assert store.get(OWNER, digest).content == data


def test_a_blob_over_the_limit_is_refused_before_its_body_is_read(store: RunningStorage) -> None:
    digest = "ab" * 32
    path = f"/v1/blobs/{digest}"
    headers = sign_request(
        OWNER,
        audience=store.audience,
        method="PUT",
        path=path,
        content_type="application/octet-stream",
        body_sha256=digest,
        now=int(time.time()),
    )
    head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    head += f"Content-Length: {MAX_BLOB + 1}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    host, port = store.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode())  # and not a byte of the body
        answer = connection.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert f"at most {MAX_BLOB} bytes" in answer
    assert store.storage.usage(OWNER.address) == 0


def test_quota_exceeded_is_507_with_the_figures_and_nothing_kept(store: RunningStorage) -> None:
    first = os.urandom(2 << 20)
    assert store.put(OWNER, first).status_code == 201
    second = os.urandom((1 << 20) + 1)
    refused = store.put(OWNER, second)
    assert refused.status_code == 507
    body = refused.json()
    assert body["used_bytes"] == 2 << 20
    assert body["quota_bytes"] == QUOTA
    assert body["size"] == (1 << 20) + 1
    assert "quota" in body["detail"]
    assert store.storage.backend.size(sha(second)) is None
    assert blob_rows(store, sha(second)) == (0, 0)
    assert store.storage.usage(OWNER.address) == 2 << 20
    # a re-upload of what he has costs nothing, and another wallet has its own quota
    assert store.put(OWNER, first).status_code == 200
    assert store.put(OTHER, second).status_code == 201


def test_reading_needs_a_signed_request(store: RunningStorage) -> None:
    data = os.urandom(100)
    digest = sha(data)
    assert store.put(OWNER, data).status_code == 201
    bare = httpx.get(f"{store.url}/v1/blobs/{digest}")
    assert bare.status_code == 401
    assert "signed request" in bare.json()["detail"]
    with_grant = httpx.get(
        f"{store.url}/v1/blobs/{digest}",
        headers={"X-Confide-Grant": grant(digest, OWNER.address)},
    )
    assert with_grant.status_code == 401
    assert httpx.head(f"{store.url}/v1/blobs/{digest}").status_code == 401
    # a signature made for another path does not pass
    _, headers = store.signed_get(OWNER, sha(b"x"))
    wrong = httpx.get(f"{store.url}/v1/blobs/{digest}", headers=headers)
    assert wrong.status_code == 401
    assert "does not match" in wrong.json()["detail"]


def test_a_wallet_neither_uploader_nor_grantee_is_forbidden(store: RunningStorage) -> None:
    data = os.urandom(100)
    digest = sha(data)
    assert store.put(OWNER, data).status_code == 201
    refused = store.get(OTHER, digest)
    assert refused.status_code == 403
    assert "neither uploaded" in refused.json()["detail"]
    # the same answer for a blob that does not exist: a digest tells nothing
    assert store.get(OTHER, sha(b"nothing")).status_code == 403


def test_grants_let_their_grantee_read_and_every_bad_grant_names_its_check(
    store: RunningStorage,
) -> None:
    data = os.urandom(5000)
    digest = sha(data)
    assert store.put(OWNER, data).status_code == 201
    good = store.get(OTHER, digest, grant=grant(digest, OTHER.address))
    assert (good.status_code, good.content) == (200, data)
    ranged = store.get(OTHER, digest, grant=grant(digest, OTHER.address), byte_range="bytes=0-9")
    assert (ranged.status_code, ranged.content) == (206, data[:10])

    stranger_key = SigningKey.generate()
    stranger = request_audience("other", stranger_key.public_bytes(), "hub")
    cases = {
        "expired": (grant(digest, OTHER.address, expires_in=-1), "has expired"),
        "another digest": (grant(sha(b"other"), OTHER.address), "for another blob"),
        "another grantee": (grant(digest, OWNER.address), f"is for {OWNER.address}"),
        "untrusted issuer": (
            grant(digest, OTHER.address, key=stranger_key, issuer=stranger),
            "not one this storage trusts",
        ),
        "forged signature": (
            grant(digest, OTHER.address, key=stranger_key),
            "signature does not verify",
        ),
        "malformed": ("not-a-grant", "malformed"),
        # a record or a report can name any digest: a grant vouching for a wallet that
        # never uploaded the blob reads nothing
        "an uploader who did not upload it": (
            grant(digest, OTHER.address, uploader=OTHER.address),
            f"vouches for {OTHER.address.lower()}, who did not upload",
        ),
    }
    for case, (text, check) in cases.items():
        refused = store.get(OTHER, digest, grant=text)
        assert refused.status_code == 403, case
        detail = refused.json()["detail"]
        assert detail.startswith("grant refused: ") and check in detail, (case, detail)


def test_a_grant_for_a_blob_that_does_not_exist_is_404(store: RunningStorage) -> None:
    digest = sha(b"never uploaded")
    missing = store.get(OTHER, digest, grant=grant(digest, OTHER.address))
    assert missing.status_code == 404


def test_replayed_signed_requests_are_refused(store: RunningStorage) -> None:
    data = os.urandom(2000)
    digest = sha(data)
    path = f"/v1/blobs/{digest}"
    upload = {
        "content-type": "application/octet-stream",
        **sign_request(
            OWNER,
            audience=store.audience,
            method="PUT",
            path=path,
            content_type="application/octet-stream",
            body_sha256=digest,
            now=int(time.time()),
        ),
    }
    assert httpx.put(store.url + path, content=data, headers=upload).status_code == 201
    replayed = httpx.put(store.url + path, content=data, headers=upload)
    assert replayed.status_code == 401
    assert "replayed" in replayed.json()["detail"]

    first, headers = store.signed_get(OWNER, digest)
    assert first.status_code == 200
    again = httpx.get(store.url + path, headers=headers)
    assert again.status_code == 401
    assert "replayed" in again.json()["detail"]


def test_a_refused_read_uses_its_nonce_up(store: RunningStorage) -> None:
    data = os.urandom(10)
    digest = sha(data)
    assert store.put(OWNER, data).status_code == 201
    refused, headers = store.signed_get(OTHER, digest)
    assert refused.status_code == 403
    again = httpx.get(store.url + f"/v1/blobs/{digest}", headers=headers)
    assert again.status_code == 401
    assert "replayed" in again.json()["detail"]


def test_unsigned_and_malformed_uploads_are_refused(store: RunningStorage) -> None:
    data = b"hello"
    unsigned = httpx.put(f"{store.url}/v1/blobs/{sha(data)}", content=data)
    assert unsigned.status_code == 401
    assert "X-Confide" in unsigned.json()["detail"]
    bad_path = store.put(OWNER, data, "NOT-A-DIGEST")
    assert bad_path.status_code == 400
    assert "64 lower-case hex" in bad_path.json()["detail"]
    stale = store.put(OWNER, data, now=int(time.time()) - 3600)
    assert stale.status_code == 401
    # a signature over another digest than the path's
    other = sign_request(
        OWNER,
        audience=store.audience,
        method="PUT",
        path=f"/v1/blobs/{sha(data)}",
        content_type="application/octet-stream",
        body_sha256=sha(b"other"),
        now=int(time.time()),
    )
    wrong = store.put(OWNER, data, headers=other)
    assert wrong.status_code == 401
    assert store.storage.usage(OWNER.address) == 0


def test_info_names_the_service_and_proves_its_key(store: RunningStorage) -> None:
    challenge = os.urandom(32)
    info = httpx.get(f"{store.url}/v1/info", params={"challenge": challenge.hex()}).json()
    check_info_proof(info, challenge)
    assert info["service"] == "storage"
    assert info["deployment_id"] == "test"
    assert info["audience"].startswith("storage/test/")
    assert info["quota_bytes"] == QUOTA
    assert info["max_blob_bytes"] == MAX_BLOB
    assert info["issuers"] == [HUB]
    assert httpx.get(f"{store.url}/v1/info", params={"challenge": "zz"}).status_code == 400
    assert httpx.get(f"{store.url}/health").status_code == 200
    assert httpx.get(f"{store.url}/ready").status_code == 200


def test_the_client_refuses_a_blob_larger_than_it_expects_and_keeps_nothing(
    store: RunningStorage, tmp_path: Path
) -> None:
    from confide.client.storage import StorageClient
    from confide.errors import ConfideError

    data = os.urandom(3 << 20 >> 1)  # 1.5 MiB
    digest = sha(data)
    assert store.put(OWNER, data).status_code == 201
    client = StorageClient(store.url, wallet=OWNER, trust_dir=tmp_path / "trust")
    target = tmp_path / "blob"
    with pytest.raises(ConfideError, match="larger than the 1048576 bytes expected"):
        client.download(digest, target, max_bytes=1 << 20)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert client.download(digest, target, max_bytes=2 << 20) == len(data)
    assert target.read_bytes() == data
