"""The "Done when" path with hub, sms and storage as separate processes (``confide serve
hub``, ``serve sms --hub``, ``serve storage --trust``): on SQLite with a blob directory,
and on PostgreSQL with an S3 bucket (moto's server). The hub's sms is refused until the
user trusts it by its fingerprint (the hub never chooses where secrets go); then deploy,
push secrets, run, show and cancel."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIDE, assert_refusal, quick_wallet, run_cli
from tests.integration.sms_server import free_port
from tests.integration.test_storage_s3 import bucket, client, s3_endpoint  # noqa: F401

PASSWORD = "pw-separate"
APP_SECRET = "SEPARATE-APP-SECRET-19"
REQUESTER_SECRET = "SEPARATE-REQUESTER-SECRET-23"


@dataclass
class Deployment:
    hub: str
    sms: str
    storage: str
    fingerprint: str  # what `confide serve sms` printed at start
    root: Path
    s3: str = ""  # the S3 endpoint and bucket, when the storage is on S3
    bucket: str = ""

    def env(self, user: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CONFIDE_HOME": str(self.root / user),
            "CONFIDE_HUB": self.hub,
            "CONFIDE_SMS": "",
            "CONFIDE_STORAGE": "",
            "CONFIDE_WALLET_PASSWORD": PASSWORD,
            **extra,
        }


def _database(url: str, name: str) -> str:
    """One SQLite file per service; one PostgreSQL schema shared (one migration chain)."""
    return url.replace("confide.db", f"{name}.db") if url.startswith("sqlite") else url


def _start(args: list[str], env: dict[str, str], url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*CONFIDE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(f"{args[:2]} did not start: {process.communicate()}")
        time.sleep(0.05)


@pytest.fixture
def deployment(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    ports = {name: free_port() for name in ("hub", "sms", "storage")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes: list[subprocess.Popen[str]] = []

    def server_env(name: str) -> dict[str, str]:
        return {**os.environ, "CONFIDE_HOME": str(tmp_path / f"server-{name}")}

    try:
        hub = [
            *("serve", "hub", "--port", str(ports["hub"]), "--db", _database(database_url, "hub")),
            *("--sms", urls["sms"], "--storage", urls["storage"]),
        ]
        processes.append(_start(hub, server_env("hub"), urls["hub"]))
        sms = [
            *("serve", "sms", "--port", str(ports["sms"]), "--db", _database(database_url, "sms")),
            *("--hub", urls["hub"], "--allow-sim"),
        ]
        processes.append(_start(sms, server_env("sms"), urls["sms"]))
        if database_url.startswith("sqlite"):
            blobs = ["--dir", str(tmp_path / "blobs")]
        else:  # the deployment at scale: PostgreSQL and S3
            endpoint = request.getfixturevalue("s3_endpoint")
            blobs = ["--s3-bucket", request.getfixturevalue("bucket"), "--s3-endpoint", endpoint]
        storage = [
            *("serve", "storage", "--port", str(ports["storage"])),
            *("--db", _database(database_url, "storage"), *blobs),
            *("--trust", urls["hub"], "--trust", urls["sms"]),
        ]
        processes.append(_start(storage, server_env("storage"), urls["storage"]))
        # The operator reads the fingerprint `confide serve sms` printed at start.
        processes[1].send_signal(signal.SIGSTOP)  # nothing more is written meanwhile
        banner = ""
        assert processes[1].stderr is not None
        os.set_blocking(processes[1].stderr.fileno(), False)
        banner = processes[1].stderr.read() or ""
        processes[1].send_signal(signal.SIGCONT)
        found = re.search(r"fingerprint ([0-9a-f]{64})", banner)
        assert found, banner
        s3 = [] if len(blobs) == 2 else [blobs[3], blobs[1]]
        yield Deployment(urls["hub"], urls["sms"], urls["storage"], found.group(1), tmp_path, *s3)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _ok(env: dict[str, str], *args: str | Path) -> dict[str, object]:
    done = run_cli(*args, "--json", env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    for text in (done.stdout, done.stderr):
        assert APP_SECRET not in text and REQUESTER_SECRET not in text
    document = json.loads(done.stdout)
    return document if isinstance(document, dict) else {"list": document}


def test_separate_services_after_trusting_the_sms_by_fingerprint(deployment: Deployment) -> None:
    alice = deployment.env("alice")
    owner = quick_wallet(Path(alice["CONFIDE_HOME"]), PASSWORD)
    bundle = deployment.root / "alice" / "app"
    assert run_cli("app", "init", bundle, env=alice).returncode == 0
    # The hub names an sms alice has not trusted: refused, saying how to trust one.
    refused = run_cli("app", "deploy", bundle, env=alice)
    assert_refusal(refused, f"names the sms {deployment.sms}", "confide sms trust")
    wrong = run_cli("sms", "trust", deployment.sms, "--fingerprint", "00" * 32, env=alice)
    assert_refusal(wrong, f"fingerprint {deployment.fingerprint}", "not trusted")
    assert_refusal(
        run_cli("sms", "trust", deployment.sms, "--fingerprint", "abc", env=alice), "'abc'"
    )
    trusted = _ok(alice, "sms", "trust", deployment.sms, "--fingerprint", deployment.fingerprint)
    assert trusted["fingerprint"] == deployment.fingerprint
    # Now the whole path.
    app = _ok(alice, "app", "deploy", bundle)
    pool = _ok(alice, "workerpool", "deploy", "separate")
    _ok(alice, "workerpool", "add-worker", str(pool["address"]), "0x" + "99" * 20)
    assert len(_ok(alice, "workerpool", "show", str(pool["address"]))["members"]) == 2  # type: ignore[arg-type]
    data = deployment.root / "alice" / "data"
    data.mkdir()
    (data / "d.txt").write_text("d")
    volume = deployment.root / "alice" / "vol"
    tag = _ok(alice, "dataset", "encrypt", data, volume)["tag"]
    dataset = _ok(alice, "dataset", "deploy", volume)
    assert dataset["checksum"] == tag
    _ok(
        alice,
        "dataset",
        "push-secret",
        str(dataset["address"]),
        "--secret-file",
        f"{volume}.key",
        "--app-measurement",
        str(app["measurement"]),
    )
    _ok(alice, "app", "push-secret", str(app["address"]), "--secret-value", APP_SECRET)
    _ok(alice, "requester", "push-secret", "x1", "--secret-value", REQUESTER_SECRET)
    run = [
        *("app", "run", str(app["address"]), "--workerpool", str(pool["address"])),
        *("--dataset", str(dataset["address"]), "--secret", "1=x1"),
    ]
    # Hardware (tee,sgx) by default beyond `confide up`: this sms verifies only
    # simulation, so the hub refuses the order with the sms's words, before queueing it.
    hardware = run_cli(*run, env=alice)
    assert_refusal(hardware, "hub refused (422)", "not released to the TEE this order runs on")
    queued = _ok(alice, *run, "--tag", "tee,sim")
    task = str(queued["task"])
    view = _ok(alice, "task", "show", task)
    assert (view["status"], view["requester"]) == ("RECEIVED", owner)
    order = view["order"]
    assert isinstance(order, dict)
    assert (order["tee"], order["dataset_checksum"]) == (["sim"], tag)
    cancelled = _ok(alice, "task", "cancel", task)
    assert cancelled["status"] == "FAILED"
    # Another user names the sms directly: pinned on first contact, fingerprint shown.
    bob = deployment.env("bob", CONFIDE_SMS=deployment.sms)
    quick_wallet(Path(bob["CONFIDE_HOME"]), PASSWORD)
    pushed = run_cli("requester", "push-secret", "b1", "--secret-value", "BOB-SECRET-5", env=bob)
    assert pushed.returncode == 0, pushed.stderr
    assert f"pinned the sms at {deployment.sms}" in pushed.stderr
    assert deployment.fingerprint in pushed.stderr
    assert "BOB-SECRET-5" not in pushed.stdout + pushed.stderr
    if deployment.bucket:  # the blobs went to the bucket
        listed = client(deployment.s3).list_objects_v2(Bucket=deployment.bucket)
        keys = " ".join(item["Key"] for item in listed.get("Contents", []))
        assert str(app["bundle"]) in keys and str(dataset["blob"]) in keys


def _worker(deployment: Deployment, name: str, pool: str) -> subprocess.Popen[str]:
    """`confide worker start` in a process of its own (its wallet made beforehand)."""
    command = [*CONFIDE, "worker", "start", "--workerpool", pool, "--tee", "sim", "--json"]
    return subprocess.Popen(
        command, env=deployment.env(name), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_the_seed_tutorial_with_two_workers_as_separate_processes(deployment: Deployment) -> None:
    from confide.demo.cubic import SOURCES

    alice = deployment.env("alice")
    quick_wallet(Path(alice["CONFIDE_HOME"]), PASSWORD)
    _ok(alice, "sms", "trust", deployment.sms, "--fingerprint", deployment.fingerprint)
    bundle = deployment.root / "alice" / "cubic"
    assert run_cli("app", "init", bundle, env=alice).returncode == 0
    (bundle / "app.py").write_text(SOURCES["python"][1])
    app = str(_ok(alice, "app", "deploy", bundle)["address"])
    pool = str(_ok(alice, "workerpool", "deploy", "tutorial")["address"])
    names = ("worker-1", "worker-2")
    for name in names:  # a worker must be a member of its pool before it starts
        address = quick_wallet(Path(deployment.env(name)["CONFIDE_HOME"]), PASSWORD)
        _ok(alice, "workerpool", "add-worker", pool, address)
    workers = [_worker(deployment, name, pool) for name in names]
    try:
        _ok(alice, "app", "push-secret", app, "--secret-value", "2;0;-1;5")
        _ok(alice, "requester", "push-secret", "x1", "--secret-value", "3")
        tasks = []
        for _ in range(2):
            ran = run_cli(
                *("app", "run", app, "--workerpool", pool, "--tag", "tee,sim"),
                *("--secret", "1=x1", "--watch", "--json"),
                env=alice,
            )
            assert ran.returncode == 0, ran.stderr
            tasks.append(json.loads(ran.stdout)["task"])
        for task in tasks:
            out = deployment.root / "alice" / task
            shown = _ok(alice, "task", "show", task, "--download", out)
            assert shown["status"] == "COMPLETED" and shown["verified"] is True
            assert json.loads((out / "result.txt").read_text())["result"] == 56
            verified = run_cli("result", "verify", task, "--dir", out, "--allow-sim", env=alice)
            assert verified.returncode == 0, verified.stderr
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=60) for process in workers]
    for process, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert "2;0;-1;5" not in stdout + stderr
        json.loads(stdout)  # one summary document at exit
