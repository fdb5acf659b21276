"""The hub as separate processes: killed with SIGKILL in the middle of claims and
restarted (no task lost, none leased twice), and two hubs on one database claiming at
once (each task claimed exactly once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.integration.sms_server import free_port
from tests.integration.test_hub_support import Clock, HubCaller, World

ROOT = Path(__file__).resolve().parents[2]


def start_hub(home: Path, db_url: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.test_hub_support",
            "--home",
            str(home),
            "--db",
            db_url,
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the hub did not become ready")
        time.sleep(0.1)


@contextmanager
def hub_process(home: Path, db_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = start_hub(home, db_url, port)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def caller_for(port: int) -> HubCaller:
    base = f"http://127.0.0.1:{port}"
    audience = httpx.get(base + "/v1/info").json()["audience"]
    return HubCaller(base, audience, Clock(), httpx.Client(timeout=30))


def queue_tasks(caller: HubCaller, world: World, count: int) -> set[str]:
    world.register(caller)
    tasks = set()
    for _ in range(count):
        order = world.order(time.time())
        answer = caller.queue(world.requester, order)
        assert answer.status_code == 201, answer.text
        tasks.add(order.task_id())
    return tasks


class Claimers:
    """Threads that claim from their hub until it answers 204, riding out a dead hub."""

    def __init__(self, world: World, ports: list[int], threads: int) -> None:
        self.world = world
        self.ports = ports
        self.claims: list[str] = []
        self.errors = 0
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.run, args=(ports[i % len(ports)],), daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(180)
            assert not thread.is_alive()

    def run(self, port: int) -> None:
        caller: HubCaller | None = None
        pool = self.world.pool().address
        while True:
            try:
                caller = caller or caller_for(port)
                answer = caller.claim(self.world.worker, pool)
            except httpx.HTTPError:
                with self.lock:
                    self.errors += 1
                caller = None  # the hub is down: a new connection, a new audience read
                time.sleep(0.05)
                continue
            if answer.status_code == 204:
                return
            if answer.status_code != 200:
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.claims.append(answer.json()["task"]["task"])


def all_tasks(caller: HubCaller) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = caller.get("/v1/tasks", limit="1000").json()
    return found


def test_sigkill_mid_claim_loses_no_task(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    world = World("test")
    with hub_process(tmp_path / "hub", database_url, port) as first:
        tasks = queue_tasks(caller_for(port), world, 150)
        claimers = Claimers(world, [port], threads=4)
        claimers.start()
        while len(claimers.claims) < 40:
            time.sleep(0.005)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    with hub_process(tmp_path / "hub", database_url, port):
        claimers.join()
        assert claimers.errors > 0  # the kill was felt by the claimers
        assert len(claimers.claims) == len(set(claimers.claims))  # none leased twice
        kept = all_tasks(caller_for(port))
        assert {t["task"] for t in kept} == tasks  # none lost
        assert all(t["status"] == "CLAIMED" and t["attempts"] == 1 for t in kept)
        # a claim whose answer died with the hub is CLAIMED, never handed out again
        assert set(claimers.claims) <= tasks
        assert len(tasks) - len(claimers.claims) <= 4


def test_two_hubs_on_one_database_claim_each_task_once(tmp_path: Path, database_url: str) -> None:
    ports = [free_port(), free_port()]
    world = World("test")
    home = tmp_path / "hub"  # both share the deployment id and the signing key
    with hub_process(home, database_url, ports[0]), hub_process(home, database_url, ports[1]):
        tasks = queue_tasks(caller_for(ports[0]), world, 300)
        claimers = Claimers(world, ports, threads=8)
        claimers.start()
        claimers.join()
        assert sorted(claimers.claims) == sorted(tasks)  # each exactly once
        kept = all_tasks(caller_for(ports[1]))
        assert all(t["status"] == "CLAIMED" and t["attempts"] == 1 for t in kept)
        assert claimers.errors == 0
