"""The requester's result commands against a real ``confide up`` (with its worker, the real
enclave runtime in the sandbox): app run --watch, task show --download, result verify,
task debug — and another user refused at each."""

from __future__ import annotations

import json

from tests.acceptance.test_cli_up_platform import Up, make_bundle, up  # noqa: F401 (fixture)
from tests.conftest import assert_refusal


def test_run_download_verify_debug(up: Up) -> None:  # noqa: F811
    up.wallet("rosa")
    up.wallet("mallory")
    app = str(up.ok("rosa", "app", "deploy", make_bundle(up, "rosa", "results"))["address"])
    ran = up.cli("rosa", "app", "run", app, "--workerpool", "default", "--watch", "--json")
    assert ran.returncode == 0, ran.stderr
    task = json.loads(ran.stdout)["task"]

    out = up.root / "rosa" / "out"
    shown = up.ok("rosa", "task", "show", task, "--download", out)
    assert shown["status"] == "COMPLETED" and shown["verified"] is True
    assert shown["simulation"] is True
    assert set(shown["times"]) >= {"RECEIVED", "CLAIMED", "COMPUTING", "COMPLETED"}
    assert str(out / f"{task}.zip") in shown["downloaded"]
    result = json.loads((out / "result.json").read_text())
    assert result["arguments"] == []

    verified = up.cli("rosa", "result", "verify", task, "--dir", out, "--allow-sim")
    assert verified.returncode == 0, verified.stderr
    assert "result verified (simulation)" in verified.stdout
    assert_refusal(up.cli("rosa", "result", "verify", task, "--dir", out), "token-status")
    (out / "result.json").write_text("{}")
    assert_refusal(
        up.cli("rosa", "result", "verify", task, "--dir", out, "--allow-sim"),
        "extracted-files",
        "result.json differs",
    )

    debugged = up.ok("rosa", "task", "debug", task)
    assert debugged["status"] == "COMPLETED" and debugged["error"] is None

    assert_refusal(up.cli("mallory", "task", "debug", task, "--logs"), "only its requester")
    stolen = up.cli("mallory", "task", "show", task, "--download", up.root / "mallory" / "x")
    assert_refusal(stolen, "requester")
    assert not (up.root / "mallory" / "x" / f"{task}.zip").exists()
