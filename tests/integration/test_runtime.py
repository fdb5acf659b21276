"""The enclave runtime for real: ``python -m confide.runtime JOB_DIR`` against a real sms
on loopback, with a RelayServer in the test playing the worker, the app in a nested
sandbox. The cubic app computes f(3) = 56 from its secrets; failures end with their
cause (and an error.txt for the requester once secrets were released); no secret value
reaches report.json or anything the worker could read in the clear."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from confide.attestation.measurement import Measurement
from confide.bundle.measure import measure_bundle
from confide.client.archive import pack
from confide.client.sms import SmsClient
from confide.crypto.keys import SymmetricKey
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet
from confide.demo.cubic import NODE as CUBIC_NODE
from confide.demo.cubic import PYTHON as CUBIC
from confide.relay.server import RelayServer, service_endpoint
from confide.results.opening import open_result
from confide.results.sealed import open_logs
from confide.results.verify import verify
from confide.sandbox import Finished, Limits, Mount, SandboxSpec, run
from confide.sms.registry import MemoryRegistry
from confide.sms.release_policy import ReleasePolicy
from confide.sms.tasks import TaskOrder, TaskRecord
from confide.volume.api import encrypt_tree
from tests.integration.sms_server import running_sms

DEVELOPER, REQUESTER, WORKER, POOL_OWNER = (Wallet.generate() for _ in range(4))
CUBIC_APP = "0x" + "c1" * 20
NODE_APP = "0x" + "c3" * 20
TRICKY_APP = "0x" + "c2" * 20
QUIET_APP = "0x" + "c4" * 20  # the tricky bundle, its record keeping logs from requesters
SHELL_APP = "0x" + "c5" * 20  # runtime: native, a shell script
C_APP = "0x" + "c6" * 20  # runtime: native, a compiled C program
# The cubic app as native programs, run as is: f(x) = ax^3 + bx^2 + cx + d with "a;b;c;d"
# in the app developer secret and x in requester secret 1.
CUBIC_SHELL = """#!/bin/sh
set -eu
result=$(printf '%s;%s\\n' "$IEXEC_APP_DEVELOPER_SECRET" "$IEXEC_REQUESTER_SECRET_1" |
    awk -F';' '{x = $5; printf "%g", $1*x*x*x + $2*x*x + $3*x + $4}')
printf '{"x": %s, "result": %s}\\n' "$IEXEC_REQUESTER_SECRET_1" "$result" > "$IEXEC_OUT/result.txt"
printf '{"deterministic-output-path": "%s/result.txt"}\\n' "$IEXEC_OUT" > "$IEXEC_OUT/computed.json"
"""
CUBIC_C = r"""#include <stdio.h>
#include <stdlib.h>
int main(void) {
    double a, b, c, d, x;
    const char *coefficients = getenv("IEXEC_APP_DEVELOPER_SECRET");
    const char *value = getenv("IEXEC_REQUESTER_SECRET_1");
    const char *out = getenv("IEXEC_OUT");
    char path[4096];
    FILE *file;
    if (!coefficients || !value || !out) return 2;
    if (sscanf(coefficients, "%lf;%lf;%lf;%lf", &a, &b, &c, &d) != 4) return 3;
    x = atof(value);
    snprintf(path, sizeof path, "%s/result.txt", out);
    if (!(file = fopen(path, "w"))) return 4;
    fprintf(file, "{\"x\": %g, \"result\": %g}\n", x, a * x * x * x + b * x * x + c * x + d);
    fclose(file);
    snprintf(path, sizeof path, "%s/computed.json", out);
    if (!(file = fopen(path, "w"))) return 4;
    fprintf(file, "{\"deterministic-output-path\": \"%s/result.txt\"}\n", out);
    fclose(file);
    return 0;
}
"""
POOL = "0x" + "9e" * 20
DATASET = "0x" + "d5" * 20
DATASET_BODY = b"a,b\n1,2\n"
CUBIC_SECRET = "2;0;-1;5"
DEV_SECRET = "dev-secret-VALUE-91c2e8"
LEAKY_SECRET = "requester-secret-VALUE-7f3a55"

# One app for every misbehaviour, chosen by its first argument.
TRICKY = r"""
import json, os, sys, time
from pathlib import Path

out = Path(os.environ["IEXEC_OUT"])
mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
if mode == "fail":
    print("about to fail", flush=True)
    sys.exit(3)
if mode == "sleep":
    time.sleep(120)
if mode == "nocomputed":
    (out / "result.txt").write_text("no computed.json")
    sys.exit(0)
if mode == "exfil":  # a requester secret, hex, into the error text and a file name
    secret = os.environ.get("IEXEC_REQUESTER_SECRET_1", "").encode().hex()
    (out / f"name-{secret}").write_text("x")
    (out / "computed.json").write_text(json.dumps({"deterministic-output-path": "/x/" + secret}))
    sys.exit(0)
if mode == "outside":
    (out / "computed.json").write_text(json.dumps({"deterministic-output-path": "/etc/passwd"}))
    sys.exit(0)
if mode == "escape":
    (out / "computed.json").write_text(json.dumps({"deterministic-output-path": "../app"}))
    sys.exit(0)
if mode == "longname":
    deep = out
    for i in range(5):
        deep = deep / (str(i) * 250)
    deep.mkdir(parents=True)
    (deep / "r.txt").write_text("deep")
if mode == "leak":
    secrets = [v for k, v in sorted(os.environ.items()) if "SECRET" in k]
    print("stdout:", " | ".join(secrets))
    print("stderr:", " | ".join(secrets), file=sys.stderr)
    (out / "secrets.txt").write_text("\n".join(secrets))
env = {k: v for k, v in os.environ.items() if "SECRET" not in k}
names = sorted(os.listdir(os.environ["IEXEC_IN"]))
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
seen = {"env": env, "in": names, "args": sys.argv[1:], "uid": os.getuid(), "fds": fds}
(out / "env.json").write_text(json.dumps(seen))
dataset = os.environ.get("IEXEC_DATASET_FILENAME")
if dataset:
    (out / "dataset-copy").write_bytes((Path(os.environ["IEXEC_IN"]) / dataset).read_bytes())
for i in range(1, int(os.environ["IEXEC_INPUT_FILES_NUMBER"]) + 1):
    name = os.environ[f"IEXEC_INPUT_FILE_NAME_{i}"]
    (out / f"copy-{name}").write_bytes((Path(os.environ["IEXEC_IN"]) / name).read_bytes())
(out / "computed.json").write_text(json.dumps({"deterministic-output-path": str(out / "env.json")}))
"""


def make_bundle(
    root: Path, code: str, runtime: str = "python", compile_c: bool = False
) -> tuple[Path, Measurement]:
    root.mkdir(parents=True)
    entrypoint = {"python": "app.py", "node": "app.js", "native": "app.sh"}[runtime]
    if compile_c:  # a compiled program, run as is
        entrypoint = "app"
        (root / "app.c").write_text(code)
        subprocess.run(["cc", "-O2", "-o", str(root / "app"), str(root / "app.c")], check=True)
    else:
        (root / entrypoint).write_text(code)
    if runtime == "native":
        (root / entrypoint).chmod(0o755)
    (root / "confide-app.yml").write_text(
        f"name: app\nentrypoint: {entrypoint}\nruntime: {runtime}\n"
        "heap: 64M\nstack: 8M\nthreads: 4\n"
    )
    return root, measure_bundle(root)


@dataclass
class World:
    base: str
    registry: MemoryRegistry
    platform: SigningKey
    sms_key: bytes
    result_key_path: Path
    result_public: bytes
    bundles: dict[str, tuple[Path, Measurement]]
    tmp: Path
    volume: Path
    volume_tag: str

    def order(self, app: str, **changes: Any) -> TaskOrder:
        order = TaskOrder(
            requester=REQUESTER.address,
            app=app,
            app_measurement=self.bundles[app][1],
            tee=("sim",),
            tolerate=("simulation",),
            ignore_advisories=(),
            secrets=((1, "x1"),),
            dataset=None,
            result_key=hashlib.sha256(self.result_public).hexdigest(),
            sms_key=self.sms_key.hex(),
            workerpool=POOL,
            salt=os.urandom(16).hex(),
            valid_until=int(time.time()) + 3600,
        )
        return dataclasses.replace(order, **changes)


@dataclass
class Ran:
    order: TaskOrder
    signature: str
    job_dir: Path
    report: dict[str, Any]
    stages: list[str]
    refused: list[str]
    output: bytes  # the runtime's own stdout and stderr (what the worker could see)

    @property
    def task(self) -> str:
        return self.order.task_id()

    def opened(self, dest: Path, key: Path) -> dict[str, bytes]:
        stored = self.job_dir / "out" / "result.zip"
        paths = open_result(stored, dest, task_id=self.task, result_private_key_path=key)
        return {str(p.relative_to(dest)): p.read_bytes() for p in paths if p.is_file()}

    def logs(self, key: Path) -> str:
        sealed = (self.job_dir / "out" / "logs.sealed").read_bytes()
        return open_logs(sealed, key, self.task).decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("runtime")
    bundles = {
        CUBIC_APP: make_bundle(tmp / "cubic", CUBIC),
        TRICKY_APP: make_bundle(tmp / "tricky", TRICKY),
        NODE_APP: make_bundle(tmp / "node", CUBIC_NODE, "node"),
        SHELL_APP: make_bundle(tmp / "shell", CUBIC_SHELL, "native"),
    }
    if shutil.which("cc") is not None:
        bundles[C_APP] = make_bundle(tmp / "c", CUBIC_C, "native", compile_c=True)
    bundles[QUIET_APP] = bundles[TRICKY_APP]
    registry = MemoryRegistry()
    registry.add_member(POOL, WORKER.address)
    for app, (_, measurement) in bundles.items():
        registry.add_app(app, DEVELOPER.address, measurement, logs=app != QUIET_APP)
    database = f"sqlite:///{tmp / 'sms.db'}"
    with running_sms(tmp / "sms", database, allow_sim=True, registry=registry) as base:
        platform = SigningKey.generate()
        worker = SmsClient(base, wallet=WORKER)
        worker.register_platform(platform)
        requester = SmsClient(base, wallet=REQUESTER)
        requester.push_requester_secret("x1", b"3")
        requester.push_requester_secret("leaky", LEAKY_SECRET.encode())
        private = X25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        requester.push_result_key(public)
        key_path = tmp / "result-key"
        key_path.write_bytes(
            private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        key_path.chmod(0o600)
        developer = SmsClient(base, wallet=DEVELOPER)
        apps = [(CUBIC_APP, CUBIC_SECRET), (NODE_APP, CUBIC_SECRET), (TRICKY_APP, DEV_SECRET)]
        apps += [(app, CUBIC_SECRET) for app in (SHELL_APP, C_APP) if app in bundles]
        for app, secret in apps:
            only = ReleasePolicy(apps=frozenset({bundles[app][1]}))
            developer.push_app_secret(app, secret.encode(), policy=only)
        # A dataset whose key only the tricky app gets, pushed as its key file reads.
        (tmp / "plain").mkdir()
        (tmp / "plain" / "table.csv").write_bytes(DATASET_BODY)
        volume_key = SymmetricKey.generate()
        tag = encrypt_tree(tmp / "plain", tmp / "volume", volume_key).tag
        registry.add_dataset(DATASET, DEVELOPER.address, tag)
        developer.push_dataset_key(
            DATASET,
            (volume_key.to_hex() + "\n").encode(),
            policy=ReleasePolicy(apps=frozenset({bundles[TRICKY_APP][1]})),
        )
        sms_key = worker.key()
        yield World(
            base, registry, platform, sms_key, key_path, public, bundles, tmp, tmp / "volume", tag
        )


def run_runtime(
    world: World,
    order: TaskOrder,
    *,
    deadline: float | None = None,
    app_logs: bool = True,
    allow_loopback: bool = False,
    bundle: Path | None = None,
    sandboxed: bool = False,
    prewarmed: bool = False,
) -> Ran:
    signature = REQUESTER.sign_text(order.signing_message())
    lease = os.urandom(8).hex()
    world.registry.add_task(TaskRecord(order, signature, lease, WORKER.address))
    job_dir = world.tmp / f"job-{order.task_id()[2:14]}"
    job_dir.mkdir()
    pack(bundle or world.bundles[order.app][0], job_dir / "bundle.tar")
    if order.dataset is not None:
        pack(world.volume, job_dir / "dataset.tar")
    worker_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    job = {
        "format": "confide-job-v1",
        "task": order.task_id(),
        "lease_token": lease,
        "order": order.to_json(),
        "signature": signature,
        "worker": WORKER.address,
        "sms_url": world.base,
        "storage_url": "http://127.0.0.1:9",
        "tee": "sim",
        "sim_platform_key": world.platform.seed().hex(),
        "app_logs": app_logs,
        "deadline": deadline or time.time() + 120,
        "relay_fd": runtime_end.fileno(),
        "allow_loopback_inputs": allow_loopback,
        "limits": {"memory_bytes": 1 << 30, "tmpfs_bytes": 64 << 20},
    }
    stages: list[str] = []
    services = {service_endpoint(world.base)}
    if prewarmed:  # as the worker starts it: before the job is there; it asks, then reads
        return _run_prewarmed(world, order, signature, job_dir, job, worker_end, runtime_end)
    (job_dir / "job.json").write_text(json.dumps(job))
    with RelayServer(worker_end, WORKER, services, allow_loopback, stages.append) as relay:
        if sandboxed:  # as the worker starts it: in the sandbox, the app nested inside
            finished = run_sandboxed(job_dir, runtime_end.fileno())
            runtime_end.close()
            assert finished.exit_code == 0, finished.stderr_tail.decode()[-3000:]
            output = finished.stdout_tail + finished.stderr_tail
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE")}
            completed = subprocess.run(
                [sys.executable, "-m", "confide.runtime", str(job_dir)],
                pass_fds=(runtime_end.fileno(),),
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
            runtime_end.close()
            assert completed.returncode == 0, completed.stderr.decode()[-3000:]
            output = completed.stdout + completed.stderr
    report = json.loads((job_dir / "out" / "report.json").read_text())
    return Ran(order, signature, job_dir, report, stages, relay.refused, output)


def _run_prewarmed(
    world: World,
    order: TaskOrder,
    signature: str,
    job_dir: Path,
    job: dict[str, Any],
    worker_end: socket.socket,
    runtime_end: socket.socket,
) -> Ran:
    """``--wait-job FD`` in the sandbox, started with the job's files kept aside: they
    are moved in (job.json last) once the runtime has asked for its job."""
    aside = job_dir.with_name(job_dir.name + "-aside")
    job_dir.rename(aside)
    job_dir.mkdir()
    asked, moved = threading.Event(), threading.Event()

    def on_job() -> bool:
        asked.set()
        moved.wait(60)
        return True

    stages: list[str] = []
    services = {service_endpoint(world.base)}
    fd = runtime_end.fileno()
    with RelayServer(worker_end, WORKER, services, False, stages.append, on_job=on_job) as relay:
        spec = dataclasses.replace(
            _runtime_spec(job_dir, fd),
            argv=(*_runtime_spec(job_dir, fd).argv, "--wait-job", str(fd)),
        )
        finished: list[Finished] = []
        runner = threading.Thread(target=lambda: finished.append(run(spec)))
        runner.start()
        assert asked.wait(60), "the runtime did not ask for its job"
        assert list(job_dir.iterdir()) == []  # it waits without a job, and writes nothing
        for name in sorted(p.name for p in aside.iterdir()):
            (aside / name).rename(job_dir / name)
        (job_dir / "job.json").write_text(json.dumps(job))
        moved.set()
        runner.join(120)
        runtime_end.close()
    assert finished and finished[0].exit_code == 0, finished[0].stderr_tail.decode()[-3000:]
    report = json.loads((job_dir / "out" / "report.json").read_text())
    output = finished[0].stdout_tail + finished[0].stderr_tail
    return Ran(order, signature, job_dir, report, stages, relay.refused, output)


def _runtime_spec(job_dir: Path, relay_fd: int) -> SandboxSpec:
    return SandboxSpec(
        argv=(sys.executable, "-I", "-m", "confide.runtime", "/job"),
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        limits=Limits(wall_seconds=120, memory_bytes=4 << 30, processes=256),
        mounts=(Mount(job_dir, "/job", writable=True),),
        cwd="/job",
        pass_fds=(relay_fd,),
        interpreter=True,
    )


def run_sandboxed(job_dir: Path, relay_fd: int) -> Finished:
    spec = SandboxSpec(
        argv=(sys.executable, "-I", "-m", "confide.runtime", "/job"),
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        limits=Limits(wall_seconds=120, memory_bytes=4 << 30, processes=256),
        mounts=(Mount(job_dir, "/job", writable=True),),
        cwd="/job",
        pass_fds=(relay_fd,),
        interpreter=True,
    )
    return run(spec)


def verified(world: World, ran: Ran) -> None:
    """The result passes the requester's offline verification (simulation allowed)."""
    report = ran.report
    document = {
        "order": ran.order.to_json(),
        "signature": ran.signature,
        "result": {
            "blob": None,
            "logs_blob": None,
            "statement": report["statement"],
            "signature": report["signature"],
            "token": report["token"],
            "error": report["error"],
        },
        "status": report["status"],
        "times": {k: int(v) for k, v in report["stages"].items()},
        "created_at": int(min(report["stages"].values())) - 1,
    }
    verdict = verify(
        ran.task,
        document,
        ran.job_dir / "out" / "result.zip",
        now=int(time.time()),
        allow_sim=True,
        result_private_key_path=world.result_key_path,
    )
    assert verdict.ok, verdict.reason()
    completed = report["status"] == "COMPLETED"
    assert verdict.outcome == ("completed" if completed else f"failed:{report['cause']}")
    logs = ran.job_dir / "out" / "logs.sealed"
    signed = report["statement"]["logs_digest"]
    assert signed == (hashlib.sha256(logs.read_bytes()).hexdigest() if logs.exists() else "")


def test_the_cubic_app_computes_f_of_3(world: World, tmp_path: Path) -> None:
    ran = run_runtime(world, world.order(CUBIC_APP))
    report = ran.report
    assert report["status"] == "COMPLETED", report
    assert report["cause"] is None and report["error"] is None
    assert report["result_file"] == "result.zip" and report["logs_file"] == "logs.sealed"
    assert list(report["stages"]) == ["PRE_COMPUTE", "ATTESTING", "COMPUTING", "POST_COMPUTE"]
    assert set(report["timings"]) == {"pre_compute", "attest", "app", "post_compute"}
    assert all(round(t, 2) == t for t in report["timings"].values())  # 10 ms, published
    assert ran.stages == ["PRE_COMPUTE", "ATTESTING", "COMPUTING"]  # then the relay closed
    statement = report["statement"]
    assert statement["task_id"] == ran.task and statement["worker"] == WORKER.address
    files = ran.opened(tmp_path / "result", world.result_key_path)
    assert json.loads(files["result.txt"]) == {"x": 3.0, "result": 56.0}
    assert set(files) == {"result.txt", "computed.json", ".confide/salt"}
    verified(world, ran)
    assert "--- stdout ---" in ran.logs(world.result_key_path)
    assert CUBIC_SECRET.encode() not in (ran.job_dir / "out" / "result.zip").read_bytes()


@pytest.mark.parametrize("app", [SHELL_APP, C_APP], ids=["shell", "c"])
def test_a_native_program_runs_as_is(world: World, tmp_path: Path, app: str) -> None:
    """runtime: native: the bundle's executable (a shell script, a compiled C program)
    in the app's sandbox, with the iExec environment, and its result signed as any."""
    if app not in world.bundles:
        pytest.skip("no C compiler here")
    ran = run_runtime(world, world.order(app))
    assert ran.report["status"] == "COMPLETED", ran.report
    files = ran.opened(tmp_path / "result", world.result_key_path)
    assert json.loads(files["result.txt"]) == {"x": 3, "result": 56}
    verified(world, ran)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_cubic_app_in_node(world: World, tmp_path: Path) -> None:
    ran = run_runtime(world, world.order(NODE_APP))
    assert ran.report["status"] == "COMPLETED", ran.report
    files = ran.opened(tmp_path / "result", world.result_key_path)
    assert json.loads(files["result.txt"]) == {"x": 3, "result": 56}
    verified(world, ran)


def test_the_runtime_runs_in_the_workers_sandbox(world: World, tmp_path: Path) -> None:
    """The runtime itself sandboxed (as the worker starts it), the app nested inside: its
    plaintext stays on the runtime's own tmpfs, the job directory holds ciphertext only."""
    ran = run_runtime(world, world.order(CUBIC_APP), sandboxed=True)
    assert ran.report["status"] == "COMPLETED", ran.report
    files = ran.opened(tmp_path / "result", world.result_key_path)
    assert json.loads(files["result.txt"]) == {"x": 3.0, "result": 56.0}
    names = sorted(p.name for p in ran.job_dir.rglob("*"))
    assert names == ["bundle.tar", "job.json", "logs.sealed", "out", "report.json", "result.zip"]
    verified(world, ran)


def test_a_prewarmed_runtime_runs_the_job_it_is_handed(world: World, tmp_path: Path) -> None:
    """Started (sandboxed, as the worker does) before its job exists, it asks the relay
    and waits; handed the job, it runs it as any other (and the relay is closed before
    the app)."""
    ran = run_runtime(world, world.order(CUBIC_APP), prewarmed=True)
    assert ran.report["status"] == "COMPLETED", ran.report
    assert ran.stages == ["PRE_COMPUTE", "ATTESTING", "COMPUTING"]
    files = ran.opened(tmp_path / "result", world.result_key_path)
    assert json.loads(files["result.txt"]) == {"x": 3.0, "result": 56.0}
    verified(world, ran)


def _fake_relay(job_dir: Path, answers: bytes) -> tuple[int, str]:
    """The runtime started with --wait-job against a raw socket that answers its first
    request with ``answers``; (exit status, that request)."""
    worker_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = runtime_end.fileno()
    process = subprocess.Popen(
        [sys.executable, "-m", "confide.runtime", str(job_dir), "--wait-job", str(fd)],
        pass_fds=(fd,),
        stderr=subprocess.PIPE,
    )
    runtime_end.close()
    worker_end.settimeout(60)
    request = worker_end.recv(1000).decode()
    if answers:
        worker_end.sendall(answers)
    else:
        worker_end.close()
    try:
        code = process.wait(60)
    finally:
        worker_end.close()
    return code, request


def test_a_prewarmed_runtime_without_a_job_ends_without_a_report(tmp_path: Path) -> None:
    for answers in (b'{"ok":false,"error":"the worker is stopping: no job"}\n', b""):
        job_dir = tmp_path / f"job-{len(answers)}"
        job_dir.mkdir()
        code, request = _fake_relay(job_dir, answers)
        assert json.loads(request) == {"op": "job"} and code == 0
        assert list(job_dir.iterdir()) == []  # nothing written, no report


def test_a_relay_answering_job_early_or_twice_does_not_confuse_the_runtime(
    tmp_path: Path,
) -> None:
    """job.json is read once, after the first ok: an answer before it is complete fails
    the task (reported), a second answer is never taken for another job."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    code, _ = _fake_relay(job_dir, b'{"ok":true}\n{"ok":true}\n')
    assert code == 0
    report = json.loads((job_dir / "out" / "report.json").read_text())
    assert report["status"] == "FAILED" and report["cause"] == "PRE_COMPUTE_FAILED"
    assert "bad job: cannot read" in report["error"]
    assert report["stages"] == {}


def test_the_app_gets_the_iexec_environment_and_nothing_else(world: World, tmp_path: Path) -> None:
    order = world.order(
        TRICKY_APP,
        secrets=((1, "x1"), (3, "leaky")),
        args="ok 'two words' \"x y\"",
        encrypt_result=False,
    )
    ran = run_runtime(world, order)
    assert ran.report["status"] == "COMPLETED", ran.report
    seen = json.loads(ran.opened(tmp_path / "r", world.result_key_path)["env.json"])
    assert seen["args"] == ["ok", "two words", "x y"]
    # stdin, stdout, stderr and the one listdir opened: no relay, nothing of the runtime.
    assert seen["fds"] == [0, 1, 2, 3]
    assert seen["uid"] != os.getuid()
    assert seen["env"] == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "IEXEC_IN": "/iexec_in",
        "IEXEC_OUT": "/iexec_out",
        "IEXEC_TASK_ID": ran.task,
        "IEXEC_INPUT_FILES_NUMBER": "0",
    }
    verified(world, ran)


def test_no_secret_reaches_the_worker_in_the_clear(world: World, tmp_path: Path) -> None:
    order = world.order(TRICKY_APP, secrets=((1, "x1"), (3, "leaky")), args="leak")
    ran = run_runtime(world, order)
    assert ran.report["status"] == "COMPLETED", ran.report
    for path in (ran.job_dir / "out").rglob("*"):
        data = path.read_bytes()
        for secret in (DEV_SECRET, LEAKY_SECRET):
            assert secret.encode() not in data, path
    assert ran.output == b""  # the runtime says nothing to the worker but report.json
    logs = ran.logs(world.result_key_path)
    assert "stdout: [redacted]" in logs and "stderr: [redacted]" in logs
    assert DEV_SECRET not in logs and LEAKY_SECRET not in logs
    # The requester gets what the app wrote in its result (its own choice).
    files = ran.opened(tmp_path / "r", world.result_key_path)
    assert LEAKY_SECRET in files["secrets.txt"].decode()


def test_logs_only_when_the_owner_allows_them(world: World) -> None:
    """The app record's `logs` reaches the runtime in the sms's sealed configuration:
    job.json's app_logs (the worker's) has no say either way."""
    quiet = run_runtime(world, world.order(QUIET_APP, args="leak"), app_logs=True)
    assert quiet.report["status"] == "COMPLETED", quiet.report
    assert quiet.report["logs_file"] is None
    assert quiet.report["statement"]["logs_digest"] == ""
    assert not (quiet.job_dir / "out" / "logs.sealed").exists()
    verified(world, quiet)
    allowed = run_runtime(world, world.order(TRICKY_APP), app_logs=False)
    assert allowed.report["logs_file"] == "logs.sealed"
    verified(world, allowed)


@pytest.mark.parametrize(
    ("args", "cause", "reason"),
    [
        ("fail", "APP_COMPUTE_FAILED", "exit 3"),
        ("nocomputed", "POST_COMPUTE_FAILED", "no computed.json"),
        ("outside", "POST_COMPUTE_FAILED", "'/etc/passwd' lies outside IEXEC_OUT"),
        ("escape", "POST_COMPUTE_FAILED", "'../app' lies outside IEXEC_OUT"),
        ("longname", "POST_COMPUTE_FAILED", "longer than 1024 bytes"),
    ],
)
def test_failures_after_attestation_give_the_requester_an_error(
    world: World, tmp_path: Path, args: str, cause: str, reason: str
) -> None:
    # x1 ("3") is not mapped here: its redaction would hide every "3" of the error text.
    ran = run_runtime(world, world.order(TRICKY_APP, args=args, secrets=((1, "leaky"),)))
    report = ran.report
    assert report["status"] == "FAILED" and report["cause"] == cause, report
    # The public error is the runtime's fixed text; the reason is for the requester only.
    assert reason not in report["error"] and "error.txt" in report["error"]
    assert report["statement"]["outcome"] == f"failed:{cause}"
    files = ran.opened(tmp_path / "r", world.result_key_path)
    assert set(files) == {"error.txt", ".confide/salt"}
    assert cause in files["error.txt"].decode() and reason in files["error.txt"].decode()
    verified(world, ran)  # the error comes from the enclave too, and says it failed
    if args == "fail":
        assert "about to fail" in ran.logs(world.result_key_path)


def test_the_deadline_stops_the_app(world: World) -> None:
    ran = run_runtime(world, world.order(TRICKY_APP, args="sleep"), deadline=time.time() + 6)
    assert ran.report["status"] == "FAILED"
    assert ran.report["cause"] == "APP_COMPUTE_TIMEOUT", ran.report
    assert ran.report["result_file"] == "result.zip"


def test_a_bundle_that_is_not_the_ordered_code_is_refused(world: World, tmp_path: Path) -> None:
    other, _ = make_bundle(tmp_path / "other", CUBIC + "\n# changed\n")
    ran = run_runtime(world, world.order(CUBIC_APP), bundle=other)
    assert ran.report["cause"] == "ATTESTATION_FAILED"
    assert "the order pins" in ran.report["error"]
    assert ran.report["result_file"] is None  # nothing was released: nothing to deliver
    assert ran.stages == ["PRE_COMPUTE"]


class _Files(http.server.BaseHTTPRequestHandler):
    body = b"input file body\n"

    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.partition("?to=")[2])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def file_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_input_files_are_fetched_and_checked(world: World, tmp_path: Path) -> None:
    good = hashlib.sha256(_Files.body).hexdigest()
    with file_server() as base:
        fetched = run_runtime(
            world,
            world.order(TRICKY_APP, input_files=((f"{base}/data.txt", good),)),
            allow_loopback=True,
        )
        assert fetched.report["status"] == "COMPLETED", fetched.report
        files = fetched.opened(tmp_path / "r", world.result_key_path)
        assert files["copy-data.txt"] == _Files.body
        assert json.loads(files["env.json"])["in"] == ["data.txt"]

        wrong = run_runtime(
            world,
            world.order(TRICKY_APP, input_files=((f"{base}/data.txt", "00" * 32),)),
            allow_loopback=True,
        )
        assert wrong.report["cause"] == "PRE_COMPUTE_FAILED"
        assert f"its SHA-256 is {good}, the order pins {'00' * 32}" in wrong.report["error"]
        assert wrong.report["result_file"] is None

        for url, why in (
            ("http://10.0.0.7/data.txt", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            (f"{base}/redirect?to=http://169.254.169.254/x", "link-local"),
            (f"{base}/redirect?to=http://[::ffff:127.0.0.1]:1/x", "IPv4-mapped"),
        ):
            refused = run_runtime(
                world, world.order(TRICKY_APP, input_files=((url, good),)), allow_loopback=True
            )
            assert refused.report["cause"] == "PRE_COMPUTE_FAILED", url
            assert why in refused.report["error"], refused.report["error"]
            assert refused.stages == ["PRE_COMPUTE"]  # nothing attested, nothing released

        # Without the test flag, plain http (and loopback) is refused.
        plain = run_runtime(world, world.order(TRICKY_APP, input_files=((f"{base}/d", good),)))
        assert plain.report["cause"] == "PRE_COMPUTE_FAILED"
        assert "is not https" in plain.report["error"]


def test_the_dataset_is_decrypted_into_iexec_in(world: World, tmp_path: Path) -> None:
    order = world.order(TRICKY_APP, dataset=DATASET, dataset_checksum=world.volume_tag)
    ran = run_runtime(world, order)
    assert ran.report["status"] == "COMPLETED", ran.report
    files = ran.opened(tmp_path / "r", world.result_key_path)
    seen = json.loads(files["env.json"])
    assert seen["env"]["IEXEC_DATASET_FILENAME"] == "table.csv"
    assert seen["in"] == ["table.csv"]
    assert files["dataset-copy"] == DATASET_BODY
    verified(world, ran)

    other = world.order(TRICKY_APP, dataset=DATASET, dataset_checksum="ab" * 32)
    refused = run_runtime(world, other)
    assert refused.report["cause"] == "PRE_COMPUTE_FAILED"
    assert f"the dataset volume's tag is {world.volume_tag}" in refused.report["error"]
    assert refused.stages == ["PRE_COMPUTE"]


def test_a_broken_job_is_reported(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "job.json").write_text('{"format": "confide-job-v1"}')
    completed = subprocess.run(
        [sys.executable, "-m", "confide.runtime", str(job_dir)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0
    report = json.loads((job_dir / "out" / "report.json").read_text())
    assert report["status"] == "FAILED" and report["cause"] == "PRE_COMPUTE_FAILED"
    assert "missing fields" in report["error"]


def test_an_app_cannot_publish_a_secret_through_the_error(world: World, tmp_path: Path) -> None:
    """The review's exfiltration: the app names a path made of a requester secret (hex,
    past the exact-value redaction) in computed.json, and a file after it. The public
    error (report.json, then the hub's task view) holds fixed runtime text only."""
    ran = run_runtime(world, world.order(TRICKY_APP, args="exfil", secrets=((1, "leaky"),)))
    report = ran.report
    assert report["status"] == "FAILED" and report["cause"] == "POST_COMPUTE_FAILED", report
    encoded = LEAKY_SECRET.encode().hex()
    assert encoded not in json.dumps(report)
    assert report["error"] == (
        "post-compute failed (computed.json or the result in IEXEC_OUT); the reason is in "
        "error.txt, in the result sealed to the requester"
    )
    files = ran.opened(tmp_path / "r", world.result_key_path)
    assert "lies outside IEXEC_OUT" in files["error.txt"].decode()  # the requester's
    verified(world, ran)
