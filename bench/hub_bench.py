"""Hub benchmark: queue 10,000 tasks, then claim and complete them with 8 simulated workers.

    python bench/hub_bench.py [--tasks N] [--workers N] [--backend sqlite|postgresql ...]
                              [--out FILE]

The hub runs as its own process (``python -m confide serve hub``, what ``confide
serve hub`` runs, with ``CONFIDE_HOME`` in a temporary directory), on a free loopback
port, over SQLite (one process, as under ``confide up``) and, when ``CONFIDE_BENCH_PG``
or ``CONFIDE_TEST_PG`` names a PostgreSQL database, over a private schema of it (dropped
afterwards), as ``--pg-hubs`` processes (default 2: the hub scales by processes on one
database; the workers are spread over them).

1. The app and the workerpool (8 member workers) are registered, and ``--tasks``
   requester-signed orders are made and queued (``POST /v1/tasks``, signed, from 4
   processes). The hub's order check asks no sms (none is configured).
2. Each simulated worker is its own process with its own wallet and connection: it
   claims (``POST /v1/workerpools/{pool}/claim``, signed), then reports the task
   ``COMPLETED`` (``POST /v1/tasks/{task}/status``, signed, passing through the
   lifecycle's statuses with ``via``: no app runs), until a claim answers 204.
3. Exactly once: every queued task was claimed by one claim, completed, and has
   ``attempts`` 1 in the database; any other outcome fails the run.

The figure is claims plus completions per second over the claiming phase (target 500 on
a 2-core machine, where the workers and the hub share the cores). A full run (both
backends, the default sizes) writes bench/results/hub.json; any other run writes the
git-ignored bench/results/quick/hub.json. The JSON holds the raw figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from confide.attestation.measurement import Measurement
from confide.crypto.requests import canonical_query, sign_request
from confide.crypto.wallet import Wallet
from confide.db.engine import make_engine
from confide.hub.tables import hub_tasks
from confide.records import OwnerRecord
from confide.sms.tasks import TaskOrder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET = 500.0  # claims + completions per second
CHAIN = ["PRE_COMPUTE", "ATTESTING", "COMPUTING", "POST_COMPUTE", "UPLOADING"]
MEASUREMENT = Measurement.parse("sim:" + "ab" * 32)
QUEUERS = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Answer:
    """A response's status and body (what the workers read)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.content = status, body

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Signer:
    """Signed JSON requests of one wallet to one hub, on one kept connection (the
    standard library's client: a simulated worker should cost the shared cores little)."""

    def __init__(self, base: str, audience: str, wallet: Wallet) -> None:
        self.base, self.audience, self.wallet = base, audience, wallet
        host, port = base.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)

    def send(
        self, method: str, path: str, document: Any = None, params: dict[str, str] | None = None
    ) -> Answer:
        body = b"" if document is None else json.dumps(document).encode()
        content_type = "application/json" if body else ""
        query = canonical_query(params or {})
        headers = sign_request(
            self.wallet,
            audience=self.audience,
            method=method,
            path=path,
            query=query,
            content_type=content_type,
            body=body,
            now=int(time.time()),
        )
        if content_type:
            headers["content-type"] = content_type
        headers["content-length"] = str(len(body))
        self.connection.request(method, path + (f"?{query}" if query else ""), body, headers)
        response = self.connection.getresponse()
        return Answer(response.status, response.read())


@contextmanager
def hub_servers(db_url: str, count: int) -> Iterator[list[tuple[str, int]]]:
    """``count`` hub processes on ``db_url`` sharing one home (deployment id and signing
    key): their base URLs and process ids."""
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as home:
        processes: list[subprocess.Popen[bytes]] = []
        started: list[tuple[str, int]] = []
        try:
            for index in range(count):  # one after the other: the first makes the keys
                port = free_port()
                command = [
                    sys.executable,
                    "-m",
                    "confide",
                    "serve",
                    "hub",
                    "--port",
                    str(port),
                    "--db",
                    db_url,
                    "--deployment",
                    "bench",
                    "--max-queued",
                    "1000000",
                ]
                log = Path(home) / f"hub-{index}.log"
                with log.open("wb") as stderr:
                    process = subprocess.Popen(
                        command, env={**os.environ, "CONFIDE_HOME": home}, stderr=stderr
                    )
                processes.append(process)
                base = f"http://127.0.0.1:{port}"
                _wait_ready(base, process, log)
                started.append((base, process.pid))
            yield started
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the hub did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queue_part(base: str, audience: str, wallet: Wallet, orders: list[dict[str, Any]]) -> int:
    signer = Signer(base, audience, wallet)
    for document in orders:
        answer = signer.send("POST", "/v1/tasks", document)
        if answer.status_code != 201:
            raise RuntimeError(f"queueing: {answer.status_code} {answer.text}")
    return len(orders)


def work(base: str, audience: str, wallet: Wallet, pool: str, start: Any, out: Connection) -> None:
    """A simulated worker: claim, complete, until the queue is empty."""
    signer = Signer(base, audience, wallet)
    claim_ms: list[float] = []
    complete_ms: list[float] = []
    tasks: list[str] = []
    start.wait()
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        answer = signer.send("POST", f"/v1/workerpools/{pool}/claim")
        t1 = time.perf_counter()
        if answer.status_code == 204:
            break
        if answer.status_code != 200:
            raise RuntimeError(f"claim: {answer.status_code} {answer.text}")
        claim_ms.append((t1 - t0) * 1000)
        claim = answer.json()
        task = claim["task"]["task"]
        report = {
            "lease_token": claim["lease_token"],
            "status": "COMPLETED",
            "via": CHAIN,
            "result_digest": "aa" * 32,
            "result_blob": "bb" * 32,
        }
        done = signer.send("POST", f"/v1/tasks/{task}/status", report)
        complete_ms.append((time.perf_counter() - t1) * 1000)
        if done.status_code != 200:
            raise RuntimeError(f"complete: {done.status_code} {done.text}")
        tasks.append(task)
    out.send(
        {
            "tasks": tasks,
            "claim_ms": claim_ms,
            "complete_ms": complete_ms,
            "seconds": time.perf_counter() - began,
            "cpu": time.process_time(),
        }
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2) if ordered else 0.0


def run(db_url: str, count: int, workers: int, hubs: int = 1) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    developer, owner, requester = Wallet.generate(), Wallet.generate(), Wallet.generate()
    members = [Wallet.generate() for _ in range(workers)]
    with hub_servers(db_url, hubs) as servers:
        base = servers[0][0]
        audience = httpx.get(base + "/v1/info").json()["audience"]
        app = OwnerRecord.app(
            "bench", developer.address, "app", bundle="11" * 32, measurement=MEASUREMENT
        ).sign(developer)
        pool = OwnerRecord.workerpool(
            "bench", owner.address, "pool", members=[m.address for m in members]
        ).sign(owner)
        for wallet, record in ((developer, app), (owner, pool)):
            answer = Signer(base, audience, wallet).send("PUT", "/v1/records", record.to_json())
            assert answer.status_code == 200, answer.text
        now = int(time.time())
        orders = []
        for _ in range(count):
            order = TaskOrder(
                requester=requester.address,
                app=app.address,
                app_measurement=MEASUREMENT,
                tee=("sim",),
                tolerate=("simulation",),
                ignore_advisories=(),
                secrets=(),
                dataset=None,
                result_key=None,
                encrypt_result=False,
                sms_key="cd" * 32,
                workerpool=pool.address,
                salt=os.urandom(16).hex(),
                valid_until=now + 6 * 3600,
            )
            orders.append({"order": order.to_json(), "signature": order.sign(requester)})
        began = time.perf_counter()
        queuers = [
            context.Process(target=queue_part, args=(base, audience, requester, orders[i::QUEUERS]))
            for i in range(QUEUERS)
        ]
        for queuer in queuers:
            queuer.start()
        for queuer in queuers:
            queuer.join()
            if queuer.exitcode != 0:
                raise RuntimeError("a queueing process failed")
        queue_seconds = time.perf_counter() - began
        start = context.Event()
        pipes, children = [], []
        for index, wallet in enumerate(members):
            mine, theirs = context.Pipe(duplex=False)
            url = servers[index % hubs][0]  # the workers spread over the hubs
            child = context.Process(
                target=work, args=(url, audience, wallet, pool.address, start, theirs)
            )
            child.start()
            pipes.append(mine)
            children.append(child)
        time.sleep(1.0)  # every worker connected and waiting
        cpu_before = sum(cpu_seconds(pid) for _, pid in servers)
        began = time.perf_counter()
        start.set()
        results = [pipe.recv() for pipe in pipes]
        seconds = time.perf_counter() - began
        server_cpu = sum(cpu_seconds(pid) for _, pid in servers) - cpu_before
        for child in children:
            child.join()
        engine = make_engine(db_url)
        with engine.connect() as connection:
            rows = connection.execute(
                select(hub_tasks.c.status, hub_tasks.c.attempts, func.count()).group_by(
                    hub_tasks.c.status, hub_tasks.c.attempts
                )
            ).all()
        engine.dispose()
    claimed = [task for result in results for task in result["tasks"]]
    queued = {TaskOrder.from_json(o["order"]).task_id() for o in orders}
    exactly_once = (
        len(claimed) == len(set(claimed)) == count
        and set(claimed) == queued
        and [tuple(r) for r in rows] == [("COMPLETED", 1, count)]
    )
    claim_ms = [v for r in results for v in r["claim_ms"]]
    complete_ms = [v for r in results for v in r["complete_ms"]]
    return {
        "tasks": count,
        "workers": workers,
        "hub_processes": hubs,
        "queue_seconds": round(queue_seconds, 2),
        "queued_per_second": round(count / queue_seconds, 1),
        "claim_complete_seconds": round(seconds, 2),
        "claims_per_second": round(len(claimed) / seconds, 1),
        "completions_per_second": round(len(complete_ms) / seconds, 1),
        "claims_plus_completions_per_second": round((len(claimed) + len(complete_ms)) / seconds, 1),
        "target_claims_plus_completions_per_second": TARGET,
        "claim_ms": {"p50": percentile(claim_ms, 0.5), "p99": percentile(claim_ms, 0.99)},
        "complete_ms": {
            "p50": percentile(complete_ms, 0.5),
            "p99": percentile(complete_ms, 0.99),
        },
        "per_worker_tasks": [len(r["tasks"]) for r in results],
        "server_cpu_ms_per_task": round(server_cpu * 1000 / count, 3),
        "server_cpu_share": round(server_cpu / seconds, 2),
        "workers_cpu_share": round(sum(r["cpu"] for r in results) / seconds, 2),
        "exactly_once": exactly_once,
        "status_attempts_counts": [list(r) for r in rows],
        "mean_claim_ms": round(statistics.fmean(claim_ms), 2),
    }


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    import psycopg

    schema = f"confide_bench_{os.urandom(6).hex()}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--pg-hubs",
        type=int,
        default=2,
        help="hub processes on PostgreSQL (SQLite: one, as under confide up)",
    )
    args = parser.parse_args()
    backends = args.backend or ["sqlite", "postgresql"]
    pg = os.environ.get("CONFIDE_BENCH_PG") or os.environ.get("CONFIDE_TEST_PG")
    full = args.tasks == 10_000 and args.workers == 8 and set(backends) == {"sqlite", "postgresql"}
    report: dict[str, Any] = {
        "command": "python bench/hub_bench.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "note": "the simulated workers and the hub share these cores",
        },
        "load_average_before": os.getloadavg()[0],
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="hub-bench-db-") as tmp:
        for backend in backends:
            if backend == "sqlite":
                figures = run(f"sqlite:///{tmp}/hub.db", args.tasks, args.workers)
            elif pg is None:
                print("postgresql: skipped (set CONFIDE_BENCH_PG or CONFIDE_TEST_PG)")
                full = False
                continue
            else:
                with postgres_schema(pg) as url:
                    figures = run(url, args.tasks, args.workers, args.pg_hubs)
            report["backends"][backend] = figures
            print(f"{backend}: {json.dumps(figures)}", file=sys.stderr)
    report["load_average_after"] = os.getloadavg()[0]
    out = args.out or (RESULTS / "hub.json" if full else RESULTS / "quick" / "hub.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    failed = [
        name
        for name, figures in report["backends"].items()
        if not figures["exactly_once"] or figures["claims_plus_completions_per_second"] < TARGET
    ]
    if failed:
        print(f"missed the target or exactly-once on: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
