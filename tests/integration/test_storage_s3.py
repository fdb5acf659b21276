"""The storage on an S3 bucket: a real S3-compatible server (moto's server mode, started
here on a free loopback port), the same uploads, reads and refusals as on a directory,
and a bucket that is missing or fills up mid-upload."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest

from confide.crypto.wallet import Wallet
from confide.storage.s3 import S3Backend
from tests.integration.sms_server import free_port
from tests.integration.storage_server import RunningStorage, running_storage

OWNER = Wallet.generate()
PART = 5 << 20  # S3's smallest part
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and server.poll() is None, "moto did not start"
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"blobs-{os.urandom(4).hex()}"
    client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(
    tmp_path: Path, database_url: str, s3_endpoint: str, bucket: str
) -> Iterator[RunningStorage]:
    backend = S3Backend(bucket, endpoint_url=s3_endpoint, part_size=PART)
    with running_storage(tmp_path, database_url, backend=backend, quota_bytes=1 << 30) as running:
        yield running


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def objects(endpoint: str, bucket: str) -> tuple[list[str], list[str]]:
    """The bucket's object keys and its unfinished multipart uploads."""
    s3 = client(endpoint)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [item["Key"] for item in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys, uploads


@pytest.mark.parametrize("size", [100_000, 12 << 20], ids=["one-object", "multipart"])
def test_upload_download_head_and_ranges_on_s3(
    store: RunningStorage, s3_endpoint: str, bucket: str, size: int
) -> None:
    data = os.urandom(size)
    digest = sha(data)
    put = store.put(OWNER, data)
    assert put.status_code == 201, put.text
    assert objects(s3_endpoint, bucket) == ([f"blobs/{digest}"], [])
    got = store.get(OWNER, digest)
    assert (got.status_code, got.content) == (200, data)
    head = store.get(OWNER, digest, method="HEAD")
    assert head.headers["content-length"] == str(size)
    part = store.get(OWNER, digest, byte_range=f"bytes=10-{size - 11}")
    assert (part.status_code, part.content) == (206, data[10 : size - 10])
    assert store.get(OWNER, digest, byte_range=f"bytes={size}-").status_code == 416
    assert store.put(OWNER, data).status_code == 200  # idempotent


@pytest.mark.parametrize("size", [1000, 11 << 20], ids=["one-object", "multipart"])
def test_a_digest_mismatch_leaves_nothing_in_the_bucket(
    store: RunningStorage, s3_endpoint: str, bucket: str, size: int
) -> None:
    claimed = sha(b"not these bytes")
    refused = store.put(OWNER, os.urandom(size), claimed)
    assert refused.status_code == 422
    assert objects(s3_endpoint, bucket) == ([], [])
    assert store.storage.usage(OWNER.address) == 0


def test_a_missing_bucket_is_a_clear_error(
    tmp_path: Path, database_url: str, s3_endpoint: str
) -> None:
    backend = S3Backend("no-such-bucket", endpoint_url=s3_endpoint)
    with running_storage(tmp_path, database_url, backend=backend) as running:
        data = os.urandom(1000)
        refused = running.put(OWNER, data)
        assert refused.status_code == 503
        assert "bucket no-such-bucket does not exist" in refused.json()["detail"]
        assert running.storage.usage(OWNER.address) == 0


def test_a_bucket_that_fills_up_mid_upload_is_507_and_keeps_nothing(
    store: RunningStorage, s3_endpoint: str, bucket: str
) -> None:
    backend = store.storage.backend
    assert isinstance(backend, S3Backend)
    parts = []

    def full_at_second_part(**kwargs: Any) -> Any:
        parts.append(kwargs)
        if len(parts) < 2:
            return None  # the first part goes to the server
        answer = {
            "Error": {"Code": "InsufficientStorage", "Message": "the bucket is full"},
            "ResponseMetadata": {"HTTPStatusCode": 507},
        }
        return SimpleNamespace(status_code=507, headers={}), answer

    backend.client.meta.events.register("before-call.s3.UploadPart", full_at_second_part)
    data = os.urandom(12 << 20)
    refused = store.put(OWNER, data)
    assert refused.status_code == 507
    assert f"bucket {bucket} is full" in refused.json()["detail"]
    assert objects(s3_endpoint, bucket) == ([], [])  # the multipart upload was aborted
    assert store.storage.usage(OWNER.address) == 0
    assert store.get(OWNER, sha(data)).status_code == 403
