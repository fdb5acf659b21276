"""Secret-service load benchmark: a real ``confide serve sms`` under load over loopback.

    python bench/sms_bench.py [--quick] [--repeat N] [--duration S] [--pushes N] [--attests N]
                              [--scenario NAME ...] [--profile DIR] [--out FILE]

A full run (both backends, every scenario, the default sizes) writes
bench/results/sms.json; any other run writes the git-ignored bench/results/quick/sms.json.

The server runs as a subprocess (``.venv/bin/confide serve sms --port P --db URL
--deployment bench``, ``CONFIDE_HOME`` in a temporary directory), one process, on a free
loopback port; this process (and the wrk it starts) is the load generator, with a wallet
made for the run. It runs on SQLite and, when ``CONFIDE_BENCH_PG`` or ``CONFIDE_TEST_PG``
names a PostgreSQL database, on a private schema of it (dropped afterwards).

Scenarios (``SCENARIOS``, in order, against every backend):

- ``head existing`` / ``head missing``: ``HEAD /v1/requesters/{address}/secrets/{name}``
  with wrk (one thread, a few connections, ``--latency``) for a secret that exists (200)
  and one that does not (404). A wrk Lua script counts every response's status: any
  other status, and any socket error, is an error. This is p99 at saturation. The sms
  remembers a secret it has seen exist (nothing deletes one), so ``head existing`` is
  answered without a database read after the first; ``head missing`` reads the
  database every time.
- ``head missing (paced)``: the database's path at the target's rate rather than at
  saturation: 32 wrk connections sent 3,100 requests a second on a fixed schedule
  (``WRK_PACING``; wrk2, which holds a rate, is not in Debian). A connection waits for
  its answer, so a server that falls behind is sent less; the rate reached is reported
  with the p99, and both must meet the target.
- ``head existing (httpx)``: the same request from a bounded-concurrency async httpx
  client, side by side (Python's client is the bottleneck there, not the server).
- ``signed push``: ``PUT /v1/requesters/{address}/secrets/{name}``, each a new secret
  (unique name, fresh nonce), all signed *before* the clock starts so that the client's
  secp256k1 signing is not measured, then sent by an async httpx client with bounded
  concurrency. Every response must be 201.
- ``sim attest``: ``POST /v1/attest`` with sim evidence for a session, each request with
  its own challenge and enclave keys, all prepared before the clock starts, then sent
  once each by wrk (``WRK_REPLAY_SCRIPT``). Every response must be 200.
- ``sim attest (httpx)``: the same from the async httpx client, side by side.

Each scenario with a target runs ``--repeat`` times (default 3); the report gives the
median run (by throughput) and every run's figures, so a run disturbed by other work on
the machine shows. It also gives the server's CPU time per request (``/proc/PID/stat``)
and the load generator's CPU share: on a 2-core machine they share the cores.

``--profile DIR`` samples the server with py-spy (``pip install py-spy``; not a
dependency) during each scenario, only the thread holding the GIL (``--gil``: where the
server's Python time goes), and writes raw stacks (flamegraph.pl's input).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from confide.attestation.measurement import Measurement
from confide.attestation.sim import SimAttester
from confide.attestation.verifier import EnclaveBinding
from confide.client.sms import SmsClient
from confide.crypto.requests import sign_request
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "sms.json"
QUICK_OUT = ROOT / "bench" / "results" / "quick" / "sms.json"  # git-ignored
CONFIDE = ROOT / ".venv" / "bin" / "confide"
PY_SPY = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
HEAD_RPS_TARGET = 3000.0
HEAD_P99_MS_TARGET = 10.0
PUSH_RPS_TARGET = 150.0
TICKS = os.sysconf("SC_CLK_TCK")

Json = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    duration: float  # seconds of each wrk run
    connections: int  # wrk connections (and the httpx HEAD client's requests in flight)
    pushes: int  # signed pushes per run
    attests: int  # attestations per run (each prepared with its own challenge)
    concurrency: int  # the push client's requests in flight
    httpx_duration: float  # seconds of the httpx HEAD run (0: skip)
    repeat: int = 3  # runs of each scenario that has a target
    scenarios: tuple[str, ...] = ()  # names to run (empty: all)
    profile: Path | None = None  # directory for py-spy profiles of the server


@dataclass
class Target:
    """One running server and what the scenarios share."""

    backend: str
    url: str
    pid: int
    wallet: Wallet
    audience: str
    workdir: Path
    settings: Settings

    def cpu_seconds(self) -> float:
        """The server's user + system CPU time so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def secret_path(self, name: str) -> str:
        return f"/v1/requesters/{self.wallet.address}/secrets/{name}"


@dataclass(frozen=True)
class Scenario:
    """One load, run against each backend. ``run`` returns its figures (``per_second``,
    ``p50_ms``, ``p99_ms``, ``errors``, ...: see :func:`summarise`); ``meets`` tells
    whether they reach ``target``."""

    name: str
    run: Callable[[Target], Json]
    target: str = ""  # the target, in words ("": none, a comparison only)
    meets: Callable[[Json], bool] | None = None


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(backend: str, db_url: str, home: Path, log: Path) -> Iterator[tuple[str, int]]:
    """Run ``confide serve sms`` until the block ends (SIGTERM, then SIGKILL)."""
    port = free_port()
    env = {**os.environ, "CONFIDE_HOME": str(home)}
    env.pop("CONFIDE_KEK", None)
    argv = [str(CONFIDE), "serve", "sms", "--port", str(port), "--db", db_url]
    argv += ["--deployment", "bench", "--allow-sim"]  # the sim attest scenario needs it
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{backend}: the sms exited: {log.read_text()[-2000:]}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{backend}: the sms did not start in 60 s")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A private schema of ``base``'s database, dropped afterwards; yields its URL."""
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


@contextmanager
def profiled(directory: Path | None, name: str, pid: int) -> Iterator[None]:
    """Sample the server with py-spy (``--profile DIR``) while the block runs."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / (re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") + ".txt")
    # --gil: only the thread holding the GIL is sampled, so the profile is where the
    # server's Python time goes (waits on the database or the socket are left out).
    argv = [PY_SPY, "record", "-p", str(pid), "-r", "200", "--gil", "-f", "raw", "-o", str(out)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on ^C
        spy.wait(timeout=30)


def disk_sync_ms(directory: Path, rounds: int = 100) -> Json:
    """How long a 4 KiB overwrite + fdatasync takes in ``directory`` (an SQLite commit in
    WAL mode with synchronous=FULL makes one): on this VM it ranges from 0.1 to 4 ms,
    depending on what else writes to the disk, and bounds a durable write's rate."""
    path = directory / "sync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    samples = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            os.pwrite(fd, os.urandom(4096), 0)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    samples.sort()
    return {"p50": round(samples[rounds // 2], 3), "p90": round(samples[rounds * 9 // 10], 3)}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- wrk

# Counts every response's status per thread and prints one JSON line at the end.
# now_us(): CLOCK_MONOTONIC in microseconds, through LuaJIT's ffi (wrk's Lua has no clock).
WRK_CLOCK = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } confide_ts;
           int clock_gettime(int, confide_ts *); ]]
local ts = ffi.new("confide_ts")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
"""

WRK_SCRIPT = """
wrk.method = "HEAD"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, string.format('"%d": %d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'CONFIDE-WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "statuses": {%s}, "socket_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, table.concat(parts, ", "),
    e.connect + e.read + e.write + e.timeout))
end
"""


# Paces wrk's connections to a fixed rate: the n-th request overall is sent no earlier
# than n / rate seconds after the first (a schedule in CLOCK_MONOTONIC through LuaJIT's
# ffi; wrk's delay() takes whole milliseconds, rounded up here, so requests leave in 1 ms
# ticks). A connection waits for its answer before its next request, so the rate holds
# only while enough connections are free: a server that falls behind is sent less over
# the run, and once it catches up the requests it missed go out back to back. wrk times
# a request from when it is written, so the time a request spent behind its slot is not
# in the latencies (wrk2 corrects for that "coordinated omission"; it is not in Debian):
# a rate reached under the target says the server fell behind.
WRK_PACING = (
    WRK_CLOCK
    + """
local pace_start, pace_sent = nil, 0
function delay()
  local now_ms = now_us() / 1000
  if pace_start == nil then pace_start = now_ms end
  local due = pace_start + pace_sent * 1000 / RATE
  pace_sent = pace_sent + 1
  return math.max(0, math.ceil(due - now_ms))
end
"""
)


def run_wrk(target: Target, path: str, expected: int, paced: tuple[int, int] | None = None) -> Json:
    """HEAD ``path`` with wrk, as fast as it answers, or (``paced``: connections, requests
    per second) on a fixed schedule at that rate (``WRK_PACING``)."""
    script = target.workdir / "head.lua"
    connections = target.settings.connections if paced is None else paced[0]
    pacing = "" if paced is None else f"RATE = {paced[1]}\n" + WRK_PACING
    script.write_text(WRK_SCRIPT + pacing)
    duration = max(1, round(target.settings.duration))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    argv += ["-s", str(script), target.url + path]
    cpu, generator = target.cpu_seconds(), children_cpu()
    run = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 60)
    cpu, generator = target.cpu_seconds() - cpu, children_cpu() - generator
    tool = f"wrk -t1 -c{connections} -d{duration}s --latency"
    if paced is not None:
        tool += f", requests sent on a schedule of {paced[1]:,}/s"
    return wrk_summary(run.stdout, run.stderr, tool, expected, cpu, generator)


def wrk_summary(
    stdout: str,
    stderr: str,
    tool: str,
    expected: int,
    cpu: float,
    generator: float,
    sent: int | None = None,
) -> Json:
    """The figures of a wrk run from its script's CONFIDE-WRK line: every status other
    than ``expected``, every socket error, and (given ``sent``) every request left
    unanswered is an error."""
    found = re.search(r"^CONFIDE-WRK (.*)$", stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{stdout}\n{stderr}")
    raw = json.loads(found.group(1))
    statuses = {int(code): n for code, n in raw["statuses"].items()}
    seconds = max(raw["duration_us"], 1) / 1e6
    errors = sum(n for code, n in statuses.items() if code != expected) + raw["socket_errors"]
    if sent is not None:
        errors += sent - raw["requests"]
    return {
        "tool": tool,
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "per_second": round(raw["requests"] / seconds),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "statuses": {str(code): n for code, n in sorted(statuses.items())},
        "errors": errors,
        "server_cpu_ms_per_request": round(cpu * 1000 / max(1, raw["requests"]), 4),
        "server_cpu_share": round(cpu / seconds, 2),
        "generator_cpu_share": round(generator / seconds, 2),
    }


# Sends each prepared request of a file once (one per line: method, path, headers as
# name=value;..., body in hex, tab-separated), counts every response's status, and times
# the run itself (first request to last response, CLOCK_MONOTONIC through LuaJIT's ffi):
# wrk's own duration is the -d it was given, whenever the requests run out. When the
# last response is in, it stops and writes the file named by its second argument, on
# which the bench ends wrk early (SIGINT: wrk then reports as at the end of -d).
WRK_REPLAY_SCRIPT = (
    WRK_CLOCK
    + """
local function unhex(text)
  return (text:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  prepared, finished = {}, args[2]
  for line in io.lines(args[1]) do
    local method, path, headers, body = line:match("^(%S+)\\t(%S+)\\t([^\\t]*)\\t(%x*)$")
    local fields = {}
    for name, value in headers:gmatch("([^=;]+)=([^;]*)") do fields[name] = value end
    table.insert(prepared, wrk.format(method, path, fields, unhex(body)))
  end
  sent, answered, statuses, first_us, last_us = 0, 0, {}, 0, 0
end
local probed = false
function request()
  -- wrk calls request() once before the run to count pipelined requests: not a send.
  if not probed then probed = true; return prepared[1] end
  sent = sent + 1
  if sent == 1 then first_us = now_us() end
  -- Out of requests: an empty write, so the connection idles until the thread stops.
  return prepared[sent] or ""
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  answered = answered + 1
  last_us = now_us()  -- the run's end if it never completes (then it is invalid anyway)
  if answered == #prepared then
    local marker = io.open(finished, "w")
    marker:write("done")
    marker:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local t = threads[1]
  local parts = {}
  for code, n in pairs(t:get("statuses")) do
    table.insert(parts, string.format('"%d": %d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'CONFIDE-WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "statuses": {%s}, "socket_errors": %d}\\n',
    t:get("answered"), t:get("last_us") - t:get("first_us"), latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, table.concat(parts, ", "),
    e.connect + e.read + e.write + e.timeout))
end
"""
)


def run_wrk_replay(target: Target, name: str, prepared: list[Prepared], expected: int) -> Json:
    """Send every prepared request once with wrk (one thread, ``--connections`` in flight)
    and summarise as :func:`run_wrk` does; a request left unanswered is an error."""
    script = target.workdir / "replay.lua"
    script.write_text(WRK_REPLAY_SCRIPT)
    requests = target.workdir / f"{name}.requests"
    finished = target.workdir / f"{name}.finished"
    finished.unlink(missing_ok=True)
    with requests.open("w") as out:
        for p in prepared:
            headers = ";".join(f"{k}={v}" for k, v in p.headers.items())
            if any(c in headers for c in "\t\n") or any(
                "=" in name or ";" in name or ";" in value for name, value in p.headers.items()
            ):
                raise ValueError(f"a header of {p.url} cannot be written to the replay file")
            out.write(f"{p.method}\t{p.url}\t{headers}\t{p.body.hex()}\n")
    limit = max(60, len(prepared) // 20)  # seconds: a run slower than 20/s is broken
    connections = target.settings.connections
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{limit}s", "--timeout", "30s", "--latency"]
    argv += ["-s", str(script), target.url, "--", str(requests), str(finished)]
    cpu, generator = target.cpu_seconds(), children_cpu()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        deadline = time.monotonic() + limit
        while run.poll() is None and not finished.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        run.send_signal(signal.SIGINT)  # wrk reports on ^C as at the end of -d
        stdout, stderr = run.communicate(timeout=60)
    cpu, generator = target.cpu_seconds() - cpu, children_cpu() - generator
    tool = (
        f"wrk -t1 -c{connections} --latency, each of {len(prepared)} prepared requests "
        f"once (replay.lua)"
    )
    return wrk_summary(stdout, stderr, tool, expected, cpu, generator, sent=len(prepared))


# --------------------------------------------------------------------------- httpx


@dataclass(frozen=True)
class Prepared:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Outcome:
    latencies: list[float]  # ms, of the requests that got an answer
    statuses: Counter[int]
    failures: int  # transport errors
    seconds: float


async def send_all(
    base_url: str, requests: Iterator[Prepared], concurrency: int, deadline: float
) -> Outcome:
    """Send ``requests`` with at most ``concurrency`` in flight, until they run out or
    ``deadline`` (monotonic) passes."""
    outcome = Outcome([], Counter(), 0, 0.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            for prepared in requests:  # one shared iterator: each request is sent once
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                try:
                    response = await client.request(
                        prepared.method,
                        prepared.url,
                        headers=prepared.headers,
                        content=prepared.body,
                    )
                except httpx.HTTPError:
                    outcome.failures += 1
                    continue
                outcome.latencies.append((time.perf_counter() - start) * 1000)
                outcome.statuses[response.status_code] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        outcome.seconds = time.perf_counter() - start
    return outcome


def drive(
    target: Target,
    requests: Iterator[Prepared],
    concurrency: int,
    seconds: float,
    tool: str,
    expected: int,
) -> Json:
    """Run :func:`send_all` and summarise it, with the server's and this process's CPU."""
    cpu, generator = target.cpu_seconds(), own_cpu()
    deadline = time.monotonic() + seconds
    outcome = asyncio.run(send_all(target.url, requests, concurrency, deadline))
    cpu, generator = target.cpu_seconds() - cpu, own_cpu() - generator
    return summarise(tool, outcome, expected, cpu, generator)


def summarise(tool: str, outcome: Outcome, expected: int, cpu: float, generator: float) -> Json:
    latencies = sorted(outcome.latencies)
    count, seconds = len(latencies), outcome.seconds

    def pct(p: float) -> float:
        return round(latencies[min(count - 1, int(count * p))], 3) if count else 0.0

    bad = sum(n for code, n in outcome.statuses.items() if code != expected)
    return {
        "tool": tool,
        "requests": count,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds) if seconds else 0,
        "p50_ms": round(statistics.median(latencies), 3) if count else 0.0,
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1], 3) if count else 0.0,
        "statuses": {str(code): n for code, n in sorted(outcome.statuses.items())},
        "errors": outcome.failures + bad,
        "server_cpu_ms_per_request": round(cpu * 1000 / max(1, count), 4),
        "server_cpu_share": round(cpu / seconds, 2) if seconds else 0.0,
        "generator_cpu_share": round(generator / seconds, 2) if seconds else 0.0,
    }


# --------------------------------------------------------------------------- scenarios

PRESENT = "bench-present"
MISSING = "bench-missing"


def head_existing(target: Target) -> Json:
    return run_wrk(target, target.secret_path(PRESENT), 200)


# 32 connections sent 3,100 requests a second: the target and a little more, so that the
# rate measured over the run (its first and last moments included) is not under it.
PACED = (32, 3100)


def head_missing_paced(target: Target) -> Json:
    """The target's load rather than saturation: p99 while the server is sent 3,100
    checks a second on a schedule, each a database read (a secret that does not exist:
    one that does is remembered)."""
    return run_wrk(target, target.secret_path(MISSING), 404, paced=PACED)


def head_missing(target: Target) -> Json:
    return run_wrk(target, target.secret_path(MISSING), 404)


def head_existing_httpx(target: Target) -> Json:
    seconds = target.settings.httpx_duration
    if seconds <= 0:
        return {"skipped": "--httpx-duration 0"}
    request = Prepared("HEAD", target.secret_path(PRESENT), {}, b"")

    def forever() -> Iterator[Prepared]:
        while True:
            yield request

    concurrency = target.settings.connections
    tool = f"httpx.AsyncClient, {concurrency} in flight"
    return drive(target, forever(), concurrency, seconds, tool, 200)


def presign_pushes(target: Target, names: list[str]) -> list[Prepared]:
    """Signed pushes of new secrets (fresh nonces), ready to send."""
    now = int(time.time())
    prepared = []
    for name in names:
        path = target.secret_path(name)
        body = os.urandom(48)
        headers = sign_request(
            target.wallet,
            audience=target.audience,
            method="PUT",
            path=path,
            content_type="application/octet-stream",
            body=body,
            now=now,
        )
        headers["content-type"] = "application/octet-stream"
        prepared.append(Prepared("PUT", path, headers, body))
    return prepared


def signed_push(target: Target) -> Json:
    count, concurrency = target.settings.pushes, target.settings.concurrency
    start = time.perf_counter()
    run = os.urandom(4).hex()
    prepared = presign_pushes(target, [f"push-{run}-{index}" for index in range(count)])
    signing = time.perf_counter() - start
    # Signatures are accepted for 300 s after signing: stop well before that.
    tool = f"httpx.AsyncClient, {concurrency} in flight, presigned"
    result = drive(target, iter(prepared), concurrency, 240 - signing, tool, 201)
    result["presigned"] = count
    result["presign_seconds"] = round(signing, 3)
    result["errors"] += count - result["requests"]  # any request left unsent counts
    return result


def head_meets(result: Json) -> bool:
    return bool(result["per_second"] >= HEAD_RPS_TARGET and result["p99_ms"] < HEAD_P99_MS_TARGET)


def push_meets(result: Json) -> bool:
    return bool(result["per_second"] >= PUSH_RPS_TARGET)


HEAD_TARGET = f">= {HEAD_RPS_TARGET:.0f}/s, p99 < {HEAD_P99_MS_TARGET:.0f} ms"
PUSH_TARGET = f">= {PUSH_RPS_TARGET:.0f}/s, every answer 201"

ATTEST_RPS_TARGET = 500.0
ATTEST_TARGET = f">= {ATTEST_RPS_TARGET:.0f}/s, every answer 200"
ATTEST_MEASUREMENT = Measurement.parse("sim:" + "be" * 32)
BENCH_SESSION = f"""
name: bench
version: "1"
services:
  - name: app
    measurements: ["{ATTEST_MEASUREMENT}"]
    command: python3 /app/app.py
    environment:
      API_KEY: "$$confide:secrets:api_key$$"
    volumes: [output]
volumes:
  - name: output
secrets:
  - name: api_key
    kind: ascii
    value: "bench-api-key"
security:
  tolerate: [simulation]
"""


@dataclass
class Enclave:
    """What the attest scenario sets up once per server: a session and a platform."""

    session: Json
    platform: SigningKey
    sms_id: str


_enclaves: dict[str, Enclave] = {}


def enclave_setup(target: Target) -> Enclave:
    if target.url not in _enclaves:
        client = SmsClient(target.url, wallet=target.wallet)
        platform = SigningKey.generate()
        client.register_platform(platform)
        session = client.create_session(BENCH_SESSION, {}, "bench.yml")
        _enclaves[target.url] = Enclave(session, platform, str(client.info()["sms_id"]))
    return _enclaves[target.url]


def prepare_attestations(target: Target, count: int) -> list[Prepared]:
    """``count`` attestation requests, each with its own challenge (fetched now, untimed:
    a nonce is single use) and enclave keys, and sim evidence bound to both."""
    enclave = enclave_setup(target)
    attester = SimAttester(enclave.platform, ATTEST_MEASUREMENT)
    owner, name, digest = enclave.session["owner"], "bench", enclave.session["hash"]
    prepared = []
    with httpx.Client(base_url=target.url, timeout=30) as client:
        for _ in range(count):
            nonce = bytes.fromhex(client.post("/v1/attest/challenge").json()["nonce"])
            keys = EnclaveKeys.generate()
            binding = EnclaveBinding(
                keys.x25519_public,
                keys.ed25519_public,
                enclave.sms_id,
                f"{owner}/{name}@{digest}",
                "app",
                "bench-host",
            )
            evidence = attester.evidence(binding.report_data(nonce))
            body = json.dumps(
                {
                    "evidence": {"tee": "sim", "data": base64.b64encode(evidence.data).decode()},
                    "nonce": nonce.hex(),
                    "x25519_public": keys.x25519_public.hex(),
                    "ed25519_public": keys.ed25519_public.hex(),
                    "service": "app",
                    "worker": "bench-host",
                    "session": {"owner": owner, "name": name, "hash": digest},
                }
            ).encode()
            headers = {"content-type": "application/json"}
            prepared.append(Prepared("POST", "/v1/attest", headers, body))
    return prepared


def sim_attest(target: Target) -> Json:
    """``POST /v1/attest`` with sim evidence, answered with a sealed configuration (one
    session secret injected, an output volume key, a signed token), each request sent
    once by wrk. The challenges are fetched before the clock starts (each request needs
    its own nonce, which expires in 60 s): what is timed is the attestation and the sealed
    configuration."""
    start = time.perf_counter()
    prepared = prepare_attestations(target, target.settings.attests)
    preparing = time.perf_counter() - start
    result = run_wrk_replay(target, "attest", prepared, 200)
    result["prepare_seconds"] = round(preparing, 3)
    return result


def sim_attest_httpx(target: Target) -> Json:
    """The same from a bounded-concurrency async httpx client, side by side: the client
    then takes a good part of the second core."""
    count = min(target.settings.attests, 3000)
    start = time.perf_counter()
    prepared = prepare_attestations(target, count)
    preparing = time.perf_counter() - start
    concurrency = target.settings.concurrency
    tool = f"httpx.AsyncClient, {concurrency} in flight, challenges fetched first"
    result = drive(target, iter(prepared), concurrency, max(5.0, 55 - preparing), tool, 200)
    result["prepared"] = count
    result["prepare_seconds"] = round(preparing, 3)
    result["errors"] += count - result["requests"]
    return result


def attest_meets(result: Json) -> bool:
    return bool(result["per_second"] >= ATTEST_RPS_TARGET)


# Run in this order against each backend.
SCENARIOS: list[Scenario] = [
    Scenario("head existing", head_existing, HEAD_TARGET, head_meets),
    Scenario("head missing", head_missing, HEAD_TARGET, head_meets),
    Scenario("head missing (paced)", head_missing_paced, HEAD_TARGET, head_meets),
    Scenario("head existing (httpx)", head_existing_httpx),
    Scenario("signed push", signed_push, PUSH_TARGET, push_meets),
    Scenario("sim attest", sim_attest, ATTEST_TARGET, attest_meets),
    Scenario("sim attest (httpx)", sim_attest_httpx),
]


def run_scenario(scenario: Scenario, target: Target) -> Json:
    """Run it (``--repeat`` times if it has a target); the median run, with all runs."""
    repeat = max(1, target.settings.repeat) if scenario.meets else 1
    name = f"{target.backend}-{scenario.name}"
    runs = []
    for _ in range(repeat):
        with profiled(target.settings.profile, name, target.pid):
            runs.append(scenario.run(target))
    if "skipped" in runs[0]:
        return runs[0]
    median = sorted(runs, key=lambda r: r["per_second"])[(len(runs) - 1) // 2]
    result = dict(median)
    result["errors"] = sum(r["errors"] for r in runs)
    if len(runs) > 1:
        result["runs"] = [
            {k: r[k] for k in ("per_second", "p50_ms", "p99_ms", "errors")} for r in runs
        ]
    if scenario.meets is not None:
        result["target"] = scenario.target
        if result["errors"]:
            result["verdict"] = f"INVALID: {result['errors']} errors"
        else:
            result["verdict"] = "met" if scenario.meets(result) else "not met"
    return result


def run_backend(backend: str, db_url: str, settings: Settings, workdir: Path) -> Json:
    home = workdir / f"home-{backend}"
    home.mkdir()
    with serve(backend, db_url, home, workdir / f"sms-{backend}.log") as (url, pid):
        audience = str(httpx.get(f"{url}/v1/info", timeout=10).json()["audience"])
        target = Target(backend, url, pid, Wallet.generate(), audience, workdir, settings)
        (present,) = presign_pushes(target, [PRESENT])
        answer = httpx.put(url + present.url, headers=present.headers, content=present.body)
        if answer.status_code != 201:
            raise RuntimeError(f"{backend}: pushing {PRESENT}: {answer.status_code} {answer.text}")
        results: Json = {"disk_fdatasync_ms": disk_sync_ms(workdir)}
        print(f"{backend:10} 4 KiB write + fdatasync: {results['disk_fdatasync_ms']} ms")
        for scenario in SCENARIOS:
            if settings.scenarios and scenario.name not in settings.scenarios:
                continue
            results[scenario.name] = result = run_scenario(scenario, target)
            print_row(backend, scenario.name, result)
        return results


def print_row(backend: str, name: str, result: Json) -> None:
    if "skipped" in result:
        print(f"{backend:10} {name:22} skipped: {result['skipped']}", flush=True)
        return
    spread = ""
    if "runs" in result:
        spread = " (runs: " + ", ".join(str(r["per_second"]) for r in result["runs"]) + ")"
    print(
        f"{backend:10} {name:22} {result['per_second']:>6}/s  p50 {result['p50_ms']:6.2f} ms  "
        f"p99 {result['p99_ms']:6.2f} ms  errors {result['errors']}  server "
        f"{result['server_cpu_ms_per_request']:.3f} CPU-ms/req  {result.get('verdict', '')}"
        f"{spread}",
        flush=True,
    )


# --------------------------------------------------------------------------- report


def machine() -> Json:
    model = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in (
        "uvicorn",
        "httptools",
        "uvloop",
        "starlette",
        "SQLAlchemy",
        "psycopg",
        "eth-account",
        "coincurve",
        "httpx",
    ):
        with suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "wrk": ((wrk.stdout or wrk.stderr).splitlines() or [""])[0],
        "packages": versions,
        "note": "the load generator (wrk or httpx) and the server share these cores",
        "speed_probe_ms": speed_probe(),
    }


def speed_probe() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): the VM's speed as the run
    ended, so run sets from different hours can be compared (it moves through the day
    on a shared host)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def is_full_run(args: argparse.Namespace, pg: str | None) -> bool:
    """Whether this run may replace the recorded results (bench/results/sms.json).

    Only a run of every scenario on both backends with the default sizes does; a quick,
    partial or profiled run goes to the git-ignored bench/results/quick/ instead, so it
    never replaces the figures docs/benchmarks.md quotes.
    """
    return bool(
        pg
        and not (args.quick or args.scenario or args.profile)
        and not (args.sqlite_only or args.postgresql_only)
        and args.repeat >= 3
        and args.duration >= 10.0
        and args.pushes >= 3000
        and args.attests >= 6000
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 300 pushes, 1 repeat")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each target scenario")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--pushes", type=int, default=3000, help="signed pushes per run")
    parser.add_argument("--attests", type=int, default=6000, help="attestations per run")
    parser.add_argument("--concurrency", type=int, default=8, help="pushes in flight")
    parser.add_argument("--httpx-duration", type=float, default=5.0)
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--postgresql-only", action="store_true", help="skip SQLite")
    parser.add_argument("--scenario", action="append", default=[], help="run only these")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the server")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON report (default: bench/results/sms.json for a full run on both backends; "
        "bench/results/quick/sms.json for --quick, --scenario, one backend or a profile)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: run bench/install-tools.sh", file=sys.stderr)
        return 1
    if not CONFIDE.exists():
        print(f"missing {CONFIDE}: run scripts/bootstrap.sh dev,bench", file=sys.stderr)
        return 1
    if args.profile and not Path(PY_SPY).exists():
        print("--profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return 1
    settings = Settings(
        duration=2.0 if args.quick else args.duration,
        connections=args.connections,
        pushes=300 if args.quick else args.pushes,
        attests=600 if args.quick else args.attests,
        concurrency=args.concurrency,
        httpx_duration=1.0 if args.quick else args.httpx_duration,
        repeat=1 if args.quick else args.repeat,
        scenarios=tuple(args.scenario),
        profile=args.profile,
    )
    pg = os.environ.get("CONFIDE_BENCH_PG") or os.environ.get("CONFIDE_TEST_PG")
    out: Path = args.out or (DEFAULT_OUT if is_full_run(args, pg) else QUICK_OUT)
    started = time.monotonic()
    load_before = os.getloadavg()
    backends: Json = {}
    with tempfile.TemporaryDirectory(prefix="confide-sms-bench-") as tmp:
        workdir = Path(tmp)
        sqlite_url = f"sqlite:///{workdir / 'sms.db'}"
        if not args.postgresql_only:
            backends["sqlite"] = run_backend("sqlite", sqlite_url, settings, workdir)
        if pg and not args.sqlite_only:
            with postgres_schema(pg) as url:
                backends["postgresql"] = run_backend("postgresql", url, settings, workdir)
        else:
            print("postgresql: skipped (set CONFIDE_BENCH_PG or CONFIDE_TEST_PG)", flush=True)
    report = {
        "command": "python bench/sms_bench.py" + (" --quick" if args.quick else ""),
        "postgresql": pg.split("@")[-1] if pg and not args.sqlite_only else "",  # no password
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.monotonic() - started, 1),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "machine": machine(),
        "settings": {**dataclasses.asdict(settings), "profile": str(settings.profile or "")},
        "backends": backends,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    invalid = [
        f"{backend}/{name}"
        for backend, results in backends.items()
        for name, result in results.items()
        if isinstance(result, dict) and result.get("errors")
    ]
    if invalid:
        print(f"errors in: {', '.join(invalid)} (see {out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
