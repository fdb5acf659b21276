"""Storage benchmark: a 1 GiB blob up and down over HTTP (local backend) against ``cp``.

    python bench/storage_bench.py [--size-mib 1024] [--rounds 5] [--httpx] [--dir DIR] [--out FILE]

One run, side by side, on one file in ``--dir`` (default: a temporary directory under
/tmp, on the file system the blob directory uses too): each round times ``cp`` of the
file, its upload (``PUT /v1/blobs/{sha256}``, signed, ``curl -T``: streamed from the
file) and its download (``GET``, curl into a file), against a ``confide serve storage``
process (SQLite, local directory backend) on the loopback; curl, so that the figures are
the storage's and not a Python client's (``--httpx`` times confide's own client library,
httpx, as well). The storage
writes the blob to a temporary file, fsyncs it and renames it into place; ``cp`` does
not fsync, so ``cp + sync`` (the copy, then ``fsync`` of the copy) is timed as well.
The client hashes the file once before its first upload (it must know the digest it
signs); that time is reported apart. The server's CPU time per transfer and its peak
resident memory (VmHWM) are read from /proc, and the load average before and after is
kept (on a shared machine, other work slows the transfers more than cp). Every figure
is kept raw (seconds per round); the summary holds medians.

Targets (issue 18): upload and download at >= 50 % of cp's speed; RSS < 200 MiB.
Results go to bench/results/storage.json (``--out`` for elsewhere).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from confide.crypto.requests import sign_request
from confide.crypto.wallet import Wallet

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
PIECE = MIB


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        block = os.urandom(16 * MIB)
        left = size
        while left:
            step = min(left, len(block))
            handle.write(block[:step])
            left -= step
            block = block[1:] + block[:1]  # not the same 16 MiB over and over


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        while piece := handle.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()


def sha256_only_seconds(size: int) -> float:
    """SHA-256 of ``size`` bytes already in memory (OpenSSL, as the storage uses it):
    the least time an upload that checks its digest can take, on one core."""
    piece = os.urandom(PIECE)
    digest = hashlib.sha256()
    began = time.perf_counter()
    for _ in range(size // PIECE):
        digest.update(piece)
    return time.perf_counter() - began


def timed_cp(source: Path, target: Path, sync: bool) -> float:
    target.unlink(missing_ok=True)
    began = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    if sync:
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - began


def file_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as handle:
        while piece := handle.read(PIECE):
            yield piece


def upload_headers(wallet: Wallet, audience: str, digest: str) -> dict[str, str]:
    """A signed ``PUT /v1/blobs/{digest}``'s headers (signed over the digest)."""
    headers = sign_request(
        wallet,
        audience=audience,
        method="PUT",
        path=f"/v1/blobs/{digest}",
        content_type="application/octet-stream",
        body_sha256=digest,
        now=int(time.time()),
    )
    return headers | {"content-type": "application/octet-stream"}


def download_headers(wallet: Wallet, audience: str, digest: str) -> dict[str, str]:
    """A signed ``GET /v1/blobs/{digest}``'s headers."""
    path = f"/v1/blobs/{digest}"
    return sign_request(wallet, audience=audience, method="GET", path=path, now=int(time.time()))


def timed_upload(url: str, audience: str, wallet: Wallet, path: Path, digest: str) -> float:
    """PUT the file with curl (``--upload-file``: streamed, Content-Length announced)."""
    blob = f"/v1/blobs/{digest}"
    headers = upload_headers(wallet, audience, digest)
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(path)]
    command += [part for name, value in headers.items() for part in ("-H", f"{name}: {value}")]
    began = time.perf_counter()
    done = subprocess.run([*command, url + blob], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - began
    if done.stdout not in ("200", "201"):
        raise SystemExit(f"upload failed: {done.stdout} {done.stderr}")
    return elapsed


def timed_download(url: str, audience: str, wallet: Wallet, digest: str, target: Path) -> float:
    """GET the blob with curl into ``target``."""
    blob = f"/v1/blobs/{digest}"
    headers = download_headers(wallet, audience, digest)
    command = ["curl", "-sS", "-o", str(target), "-w", "%{http_code}"]
    command += [part for name, value in headers.items() for part in ("-H", f"{name}: {value}")]
    target.unlink(missing_ok=True)
    began = time.perf_counter()
    done = subprocess.run([*command, url + blob], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - began
    if done.stdout != "200":
        raise SystemExit(f"download failed: {done.stdout} {done.stderr}")
    return elapsed


def _raw_request(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.sendall(head)
    return connection


def _request_head(method: str, url: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {url.removeprefix('http://')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_head(connection: socket.socket, buffer: bytearray) -> tuple[int, int, memoryview]:
    """(status, content length, the body bytes that came with the head)."""
    received = bytearray()
    while b"\r\n\r\n" not in received:
        count = connection.recv_into(buffer)
        if not count:
            raise SystemExit("the storage closed the connection")
        received += buffer[:count]
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), int(fields.get("content-length", "0")), memoryview(rest)


def timed_raw_upload(url: str, audience: str, wallet: Wallet, path: Path, digest: str) -> float:
    """PUT the file from a minimal HTTP/1.1 client: the body goes with ``sendfile``
    (no copy in the client), so the time is the storage's, not a client's."""
    blob = f"/v1/blobs/{digest}"
    headers = upload_headers(wallet, audience, digest)
    size = path.stat().st_size
    headers["content-length"] = str(size)
    buffer = bytearray(64 << 10)
    began = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        with _raw_request(url, _request_head("PUT", url, blob, headers)) as connection:
            sent = 0
            while sent < size:
                sent += os.sendfile(connection.fileno(), fd, sent, size - sent)
            status, _, _ = _read_head(connection, buffer)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - began
    if status not in (200, 201):
        raise SystemExit(f"upload failed: {status}")
    return elapsed


def timed_raw_download(url: str, audience: str, wallet: Wallet, digest: str, target: Path) -> float:
    """GET the blob from a minimal HTTP/1.1 client that reads 4 MiB at a time into one
    buffer and writes it to ``target``, as ``cp`` does (curl writes 16 KiB at a time:
    curl from a server that uses ``sendfile`` is itself at about 0.3 of cp here)."""
    blob = f"/v1/blobs/{digest}"
    headers = download_headers(wallet, audience, digest)
    buffer = bytearray(4 << 20)
    view = memoryview(buffer)
    target.unlink(missing_ok=True)
    began = time.perf_counter()
    with _raw_request(url, _request_head("GET", url, blob, headers)) as connection:
        status, size, first = _read_head(connection, buffer)
        if status != 200:
            raise SystemExit(f"download failed: {status}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, first)
            received = len(first)
            while received < size:
                count = connection.recv_into(buffer)
                if not count:
                    raise SystemExit("the download ended early")
                os.write(fd, view[:count])
                received += count
        finally:
            os.close(fd)
    return time.perf_counter() - began


def timed_httpx_upload(url: str, audience: str, wallet: Wallet, path: Path, digest: str) -> float:
    """The same upload from Python (httpx, h11), as confide's own client sends it."""
    blob = f"/v1/blobs/{digest}"
    headers = upload_headers(wallet, audience, digest)
    headers["content-length"] = str(path.stat().st_size)
    began = time.perf_counter()
    answer = httpx.put(url + blob, content=file_pieces(path), headers=headers, timeout=600)
    elapsed = time.perf_counter() - began
    if answer.status_code not in (200, 201):
        raise SystemExit(f"upload failed: {answer.status_code} {answer.text}")
    return elapsed


def timed_httpx_download(
    url: str, audience: str, wallet: Wallet, digest: str, target: Path
) -> float:
    blob = f"/v1/blobs/{digest}"
    headers = download_headers(wallet, audience, digest)
    target.unlink(missing_ok=True)
    began = time.perf_counter()
    with httpx.stream("GET", url + blob, headers=headers, timeout=600) as answer:
        if answer.status_code != 200:
            raise SystemExit(f"download failed: {answer.status_code}")
        with target.open("wb", buffering=0) as handle:
            for piece in answer.iter_raw(PIECE):
                handle.write(piece)
    return time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_storage(work: Path, size: int) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    limit = f"{max(2 * size, 1 << 30)}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "confide",
            "serve",
            "storage",
            "--port",
            str(port),
            "--dir",
            str(work / "blobs"),
            "--db",
            f"sqlite:///{work / 'storage.db'}",
            "--deployment",
            "bench",
            "--max-blob",
            limit,
            "--quota",
            f"{int(limit) * 4}",
        ],
        env={**os.environ, "CONFIDE_HOME": str(work / "home")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            audience = httpx.get(url + "/v1/info", timeout=1).json()["audience"]
            return process, url, str(audience)
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the storage did not start") from None
            time.sleep(0.1)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument(
        "--httpx", action="store_true", help="also time the transfers from Python (httpx)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "storage.json")
    args = parser.parse_args()
    size = args.size_mib * MIB
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="confide-storage-bench-", dir=args.dir))
    try:
        source = work / "source.bin"
        make_file(source, size)
        began = time.perf_counter()
        digest = sha256_file(source)
        hash_seconds = time.perf_counter() - began
        sha256_seconds = min(sha256_only_seconds(size) for _ in range(3))
        process, url, audience = start_storage(work, size)
        wallet = Wallet.generate()
        dl = work / "dl.bin"
        rounds: list[dict[str, float]] = []
        try:
            for round_number in range(args.rounds + 1):
                figures: dict[str, float] = {}

                def timed(
                    name: str,
                    run: Any,
                    *arguments: Any,
                    server: bool = True,
                    into: dict[str, float] = figures,
                ) -> None:
                    # each transfer starts with no dirty pages left by the one before
                    # (their writeback would slow it), and a stored blob is removed
                    # before an upload (a re-upload is only hashed: idempotent)
                    os.sync()
                    if name.startswith("upload"):
                        shutil.rmtree(work / "blobs" / digest[:2], ignore_errors=True)
                    used = cpu_seconds(process.pid)
                    into[name] = run(*arguments)
                    if server:
                        into[f"{name}_server_cpu"] = cpu_seconds(process.pid) - used

                timed("cp", timed_cp, source, work / "cp.bin", False, server=False)
                timed("cp_sync", timed_cp, source, work / "cp.bin", True, server=False)
                timed("upload", timed_raw_upload, url, audience, wallet, source, digest)
                timed("download", timed_raw_download, url, audience, wallet, digest, dl)
                timed("upload_curl", timed_upload, url, audience, wallet, source, digest)
                timed("download_curl", timed_download, url, audience, wallet, digest, dl)
                if args.httpx:
                    timed("upload_httpx", timed_httpx_upload, url, audience, wallet, source, digest)
                    timed("download_httpx", timed_httpx_download, url, audience, wallet, digest, dl)
                if round_number > 0:  # the first round warms up: its figures are dropped
                    rounds.append(figures)
                if sha256_file(dl) != digest:
                    raise SystemExit("the downloaded blob differs")
            rss = peak_rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    mib_s = {
        name: args.size_mib / seconds
        for name, seconds in median.items()
        if not name.endswith("_cpu")
    }
    result: dict[str, Any] = {
        "benchmark": "storage",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "size_bytes": size,
        "rounds": rounds,
        "client_hash_seconds": hash_seconds,
        "median_seconds": median,
        "median_mib_per_s": mib_s,
        "upload_vs_cp": median["cp"] / median["upload"],
        "download_vs_cp": median["cp"] / median["download"],
        "upload_vs_cp_sync": median["cp_sync"] / median["upload"],
        "cp_sync_vs_cp": median["cp"] / median["cp_sync"],
        # What any durable, content-addressed upload needs at least: the SHA-256 of the
        # bytes (one stream, one core) and a copy that reaches the disk (cp + fsync).
        "sha256_only_seconds": sha256_seconds,
        "upload_lower_bound_seconds": max(sha256_seconds, median["cp_sync"]),
        "upload_budget_seconds": 2 * median["cp"],
        "curl_upload_vs_cp": median["cp"] / median["upload_curl"],
        "curl_download_vs_cp": median["cp"] / median["download_curl"],
        "server_peak_rss_mib": rss,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "targets": {"vs_cp": 0.5, "rss_mib": 200},
    }
    result["met"] = result["upload_vs_cp"] >= 0.5 and result["download_vs_cp"] >= 0.5 and rss < 200
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
