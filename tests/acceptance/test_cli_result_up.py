"""The requester's result commands against a real ``confide up`` (with its worker, the real
enclave runtime in the sandbox): app run --watch, task show --download, result verify,
task debug — and another user refused at each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli_up_platform import Up, make_bundle, start_up, stop_up
from tests.conftest import assert_refusal

APP_SECRET = "coefficients-7f3a9c"
LOGGING_APP = """\
import json, os, sys
from pathlib import Path
out = Path(os.environ["IEXEC_OUT"])
secret = os.environ.get("IEXEC_APP_DEVELOPER_SECRET", "")
print("starting; careless line:", secret)
print("to stderr", file=sys.stderr)
(out / "result.json").write_text(json.dumps({"arguments": sys.argv[1:]}))
computed = {"deterministic-output-path": str(out / "result.json")}
(out / "computed.json").write_text(json.dumps(computed))
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """A ``confide up`` with one worker: its tasks run."""
    started = start_up(tmp_path_factory.mktemp("up"), "--workers", "1")
    try:
        yield started
    finally:
        stop_up(started)


def test_run_download_verify_debug(up: Up) -> None:
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


def test_logs_reach_the_requester_only_when_the_app_allows_them_with_secrets_redacted(
    up: Up,
) -> None:
    up.wallet("lena")
    bundle = make_bundle(up, "lena", "chatty")
    Path(bundle, "app.py").write_text(LOGGING_APP)
    quiet = str(up.ok("lena", "app", "deploy", bundle)["address"])
    bundle_loud = make_bundle(up, "lena", "chatty-logs")
    Path(bundle_loud, "app.py").write_text(LOGGING_APP)
    loud = up.ok("lena", "app", "deploy", bundle_loud, "--allow-logs")
    assert loud["logs"] is True
    for app in (quiet, str(loud["address"])):
        pushed = up.cli("lena", "app", "push-secret", app, "--secret-value", APP_SECRET)
        assert pushed.returncode == 0, pushed.stderr
    tasks = {}
    for app in (quiet, str(loud["address"])):
        ran = up.cli("lena", "app", "run", app, "--workerpool", "default", "--watch", "--json")
        assert ran.returncode == 0, ran.stderr
        tasks[app] = json.loads(ran.stdout)["task"]
    with_logs = up.ok("lena", "task", "debug", tasks[str(loud["address"])], "--logs")
    assert "starting; careless line:" in with_logs["logs"]
    assert "to stderr" in with_logs["logs"]
    assert APP_SECRET not in with_logs["logs"]
    assert "[redacted]" in with_logs["logs"]
    without = up.cli("lena", "task", "debug", tasks[quiet], "--logs")
    assert APP_SECRET not in without.stdout + without.stderr
    assert "starting; careless line" not in without.stdout
