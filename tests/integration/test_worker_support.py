"""Helpers of the worker's tests (no tests here): the embedded platform of ``confide up``
on a loopback port (in a thread), a workerpool whose owner is the worker, an app, a
requester who queues orders, a worker run in a thread, and a fake enclave runtime (a
script run as a plain subprocess: the tests of the claim, heartbeat, download and report
logic; test_worker_sandbox.py runs the real runtime in the real sandbox).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from confide.bundle.scaffold import init_bundle
from confide.client.deploy import deploy_app, deploy_workerpool
from confide.client.orders import RunOptions, build_order
from confide.client.platform import Platform
from confide.crypto.wallet import Wallet
from confide.up.compose import compose
from confide.worker import Outcome, Runner, RunOutcome, WorkerConfig, run_worker
from tests.integration.sms_server import free_port

FAKE_RUNTIME = Path(__file__).with_name("test_worker_fake_runtime.py")


@dataclass
class Up:
    base: str
    root: Path
    embedded: Any

    def platform(self, wallet: Wallet, name: str) -> Platform:
        return Platform(self.base, wallet=wallet, trust_dir=self.root / name / "trust")


@dataclass
class Served:
    """The embedded platform served on a thread (stop it and serve it again: a restart)."""

    server: uvicorn.Server
    thread: threading.Thread
    embedded: Any

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.embedded.close()


def serve_up(root: Path, port: int, lease_seconds: int = 60) -> Served:
    embedded = compose(root / "server", port, lease_seconds=lease_seconds)
    config = uvicorn.Config(embedded.app, host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the platform did not start")
        time.sleep(0.01)
    return Served(server, thread, embedded)


@contextmanager
def running_up(root: Path, lease_seconds: int = 60) -> Iterator[Up]:
    """The embedded platform (hub, sms with sim, storage) served in a thread."""
    served = serve_up(root, free_port(), lease_seconds)
    try:
        yield Up(served.embedded.base_url, root, served.embedded)
    finally:
        served.stop()


@dataclass
class Pool:
    """A workerpool owned by ``worker`` (its first member), an app and a requester."""

    up: Up
    worker: Wallet = field(default_factory=Wallet.generate)
    developer: Wallet = field(default_factory=Wallet.generate)
    requester: Wallet = field(default_factory=Wallet.generate)
    address: str = ""
    app: str = ""

    def deploy(self, logs: bool = True) -> Pool:
        signed, _ = deploy_workerpool(self.up.platform(self.worker, "w"), self.worker, "p", None)
        self.address = signed.record.address
        bundle = self.up.root / "bundle"
        if not bundle.exists():
            init_bundle(bundle, "python", "cubic")
        developer = self.up.platform(self.developer, "d")
        signed, _ = deploy_app(developer, self.developer, bundle)
        if logs:  # the owner lets the logs reach the requester
            from confide.client.deploy import publish
            from confide.records import OwnerRecord

            record = signed.record
            again = OwnerRecord.app(
                record.deployment,
                record.owner,
                record.name,
                bundle=str(record.field("bundle")),
                measurement=record.measurement,
                logs=True,
                sequence=record.sequence + 1,
            ).sign(self.developer)
            publish(developer, again)
        self.app = signed.record.address
        return self

    def queue(self, **options: Any) -> str:
        platform = self.up.platform(self.requester, "r")
        run = RunOptions(app=self.app, workerpool=self.address, **options)
        order = build_order(platform, self.requester, run, self.up.root / "r" / "result-key")
        answer = platform.hub.submit_task(order, order.sign(self.requester))
        return str(answer["task"])

    def task(self, task_id: str) -> dict[str, Any]:
        view = self.up.platform(self.requester, "r").hub.task(task_id)
        assert view is not None
        return view

    def wait(self, task_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = self.task(task_id)
            if view["status"] in statuses:
                return view
            assert time.monotonic() < deadline, view
            time.sleep(0.1)


def fake_runner(mode: str = "complete", started: list[int] | None = None) -> Runner:
    """A Runner that starts the fake runtime as a plain subprocess (no sandbox); the pid
    of each one it starts goes to ``started``."""

    def run(
        job_dir: Path, relay_fd: int, wall_seconds: float, cancel: threading.Event
    ) -> RunOutcome:
        argv = [sys.executable, str(FAKE_RUNTIME), str(job_dir), mode, str(relay_fd)]
        process = subprocess.Popen(argv, pass_fds=(relay_fd,))
        if started is not None:
            started.append(process.pid)
        give_up = time.monotonic() + wall_seconds
        while process.poll() is None:
            if cancel.wait(0.05) or time.monotonic() > give_up:
                process.kill()
                process.wait()
                timed_out = not cancel.is_set()
                return RunOutcome(None, timed_out, "deadline" if timed_out else "cancelled")
        code = process.returncode
        return RunOutcome(code, False, None if code == 0 else "exit")

    return run


@dataclass
class RunningWorker:
    thread: threading.Thread
    stop: threading.Event
    outcomes: list[Outcome]
    errors: list[BaseException]

    def finish(self, timeout: float = 60) -> list[Outcome]:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        return self.outcomes


def worker_config(of: Pool, home: Path, **kw: Any) -> WorkerConfig:
    fields: dict[str, Any] = {
        "hub_url": of.up.base,
        "pool": of.address,
        "wallet": of.worker,
        "tee": "sim",
        "home": home,
        "work_dir": home / "jobs",
        "runner": fake_runner(),
        "claim_wait": 1,
    }
    fields.update(kw)
    return WorkerConfig(**fields)


def start_worker(config: WorkerConfig) -> RunningWorker:
    stop = threading.Event()
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            outcomes.extend(run_worker(config, stop))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return RunningWorker(thread, stop, outcomes, errors)


def read_job(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def main() -> None:
    """A worker in this process with the fake runtime (what the fault tests start, kill
    and stop): SIGTERM or SIGINT stops claiming, a second one stops at once; the outcomes
    are printed as JSON."""
    import argparse
    import signal

    from confide.crypto.wallet import load_wallet

    parser = argparse.ArgumentParser()
    for name in ("--hub", "--pool", "--keystore", "--password", "--home", "--mode"):
        parser.add_argument(name, required=True)
    parser.add_argument("--sleep", type=float, default=5.0)
    args = parser.parse_args()
    stop = threading.Event()

    def stopping(signum: int, frame: object) -> None:
        if stop.is_set():  # a second one: stop now (the running tasks are given back)
            raise SystemExit(128 + signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping)
    config = WorkerConfig(
        hub_url=args.hub,
        pool=args.pool,
        wallet=load_wallet(Path(args.keystore), args.password),
        tee="sim",
        home=Path(args.home),
        work_dir=Path(args.home) / "jobs",
        runner=fake_runner(args.mode),
        claim_wait=1,
        job_extra={"fake_sleep": args.sleep},
        on_start=lambda _: print("started", flush=True),
    )
    outcomes = run_worker(config, stop)
    print(json.dumps([[o.task, o.status, o.cause] for o in outcomes]), flush=True)


if __name__ == "__main__":
    main()
