"""The storage when things go wrong: a blob directory that fills up (a real 2 MiB tmpfs in
a user namespace, and a full disk injected at the write), a client that stops sending,
and memory that stays flat while large blobs stream through a server process."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet
from confide.storage import local
from confide.web.limits import Limits
from tests.integration.sms_server import free_port
from tests.integration.storage_server import running_storage

OWNER = Wallet.generate()
MIB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _serve_command(port: int, blobs: Path, db_url: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "confide",
        "serve",
        "storage",
        "--port",
        str(port),
        "--dir",
        str(blobs),
        "--db",
        db_url,
        "--deployment",
        "faults",
        *extra,
    ]


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> str:
    """The audience of the storage at ``url`` once it answers."""
    deadline = time.monotonic() + 30
    while True:
        try:
            audience: str = httpx.get(url + "/v1/info", timeout=1).json()["audience"]
            return audience
        except httpx.HTTPError:
            assert time.monotonic() < deadline and process.poll() is None, "no storage"
            time.sleep(0.1)


def _upload(url: str, audience: str, data: bytes) -> httpx.Response:
    digest = sha(data)
    path = f"/v1/blobs/{digest}"
    headers = sign_request(
        OWNER,
        audience=audience,
        method="PUT",
        path=path,
        content_type="application/octet-stream",
        body_sha256=digest,
        now=int(time.time()),
    )
    headers["content-type"] = "application/octet-stream"
    return httpx.put(url + path, content=data, headers=headers, timeout=60)


@pytest.fixture
def storage_process(tmp_path: Path, database_url: str) -> Iterator[tuple[str, str]]:
    """A storage process whose blob directory is a 2 MiB tmpfs (its own mount namespace):
    (url, audience)."""
    if not _can_mount_tmpfs():
        pytest.skip("no user namespace with a tmpfs mount here")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    port = free_port()
    serve = " ".join(f"'{part}'" for part in _serve_command(port, blobs, database_url))
    env = {**os.environ, "CONFIDE_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=2m tmpfs '{blobs}' && exec {serve}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, _wait_until_up(url, process)
    finally:
        process.terminate()
        process.wait(20)


def test_a_blob_directory_that_fills_up_is_507_and_keeps_nothing(
    storage_process: tuple[str, str],
) -> None:
    url, audience = storage_process
    too_big = os.urandom(3 * MIB)
    refused = _upload(url, audience, too_big)
    assert refused.status_code == 507, refused.text
    assert "the blob directory is full" in refused.json()["detail"]
    # the temporary file is gone: the 2 MiB directory takes a 1.5 MiB blob now
    fits = os.urandom(3 * MIB // 2)
    assert _upload(url, audience, fits).status_code == 201
    digest = sha(too_big)
    headers = sign_request(
        OWNER, audience=audience, method="GET", path=f"/v1/blobs/{digest}", now=int(time.time())
    )
    assert httpx.get(f"{url}/v1/blobs/{digest}", headers=headers).status_code == 403


def test_a_full_disk_at_the_write_is_507_and_keeps_nothing(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = []
    real_write = local._write_all

    def fill_after_one_mib(fd: int, chunk: bytes) -> None:
        written.append(len(chunk))
        if sum(written) > MIB:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, chunk)

    monkeypatch.setattr(local, "_write_all", fill_after_one_mib)
    with running_storage(tmp_path, database_url) as store:
        data = os.urandom(3 * MIB)
        refused = store.put(OWNER, data)
        assert refused.status_code == 507
        assert "full" in refused.json()["detail"]
        backend = store.storage.backend
        assert isinstance(backend, local.LocalBackend)
        assert list(backend.temporary.iterdir()) == []
        assert backend.size(sha(data)) is None
        assert store.storage.usage(OWNER.address) == 0


def test_a_client_that_stops_sending_is_408_and_leaves_no_temporary_file(
    tmp_path: Path, database_url: str
) -> None:
    limits = Limits(idle_timeout=1.0)
    with running_storage(tmp_path, database_url, limits=limits) as store:
        digest = "cd" * 32
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
        head += f"Content-Length: {2 * MIB}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        host, port = store.url.removeprefix("http://").split(":")
        began = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(head.encode() + os.urandom(MIB + 5))  # then nothing more
            answer = connection.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "no byte of the body arrived for 1 s" in answer
        assert time.monotonic() - began < 8
        backend = store.storage.backend
        assert isinstance(backend, local.LocalBackend)
        deadline = time.monotonic() + 5
        while list(backend.temporary.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(backend.temporary.iterdir()) == []


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_memory_stays_flat_while_a_large_blob_streams_through(
    tmp_path: Path, database_url: str
) -> None:
    size = 384 * MIB
    piece = os.urandom(MIB)
    digest_hash = hashlib.sha256()
    for index in range(size // MIB):
        digest_hash.update(piece[index % 7 :] + piece[: index % 7])
    digest = digest_hash.hexdigest()

    def body() -> Iterator[bytes]:
        for index in range(size // MIB):
            yield piece[index % 7 :] + piece[: index % 7]

    port = free_port()
    env = {**os.environ, "CONFIDE_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        _serve_command(port, tmp_path / "blobs", database_url, ("--max-blob", "1GiB")),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        audience = _wait_until_up(url, process)
        path = f"/v1/blobs/{digest}"
        headers = sign_request(
            OWNER,
            audience=audience,
            method="PUT",
            path=path,
            content_type="application/octet-stream",
            body_sha256=digest,
            now=int(time.time()),
        )
        headers |= {"content-type": "application/octet-stream", "content-length": str(size)}
        put = httpx.put(url + path, content=body(), headers=headers, timeout=120)
        assert put.status_code == 201, put.text
        read = sign_request(OWNER, audience=audience, method="GET", path=path, now=int(time.time()))
        received = hashlib.sha256()
        with httpx.stream("GET", url + path, headers=read, timeout=120) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received.update(chunk)
        assert received.hexdigest() == digest
        peak = _peak_rss_mib(process.pid)
        assert peak < 200, f"the storage's peak RSS was {peak:.0f} MiB"
    finally:
        process.terminate()
        process.wait(20)


def test_a_reader_that_goes_away_mid_blob_leaves_the_storage_serving(
    tmp_path: Path, database_url: str
) -> None:
    with running_storage(tmp_path, database_url) as store:
        data = os.urandom(16 * MIB)
        digest = sha(data)
        assert store.put(OWNER, data).status_code == 201
        path = f"/v1/blobs/{digest}"
        for _ in range(3):
            headers = sign_request(
                OWNER, audience=store.audience, method="GET", path=path, now=int(time.time())
            )
            with httpx.stream("GET", store.url + path, headers=headers, timeout=30) as answer:
                assert answer.status_code == 200
                next(answer.iter_raw(65536))  # one piece, then the connection is closed
        whole = store.get(OWNER, digest)
        assert (whole.status_code, whole.content) == (200, data)
