"""Issue 18's "Done when", as a new user types it against ``confide up``: deploy an app and a
dataset, create a workerpool, push the app and requester secrets, queue a task whose order
the sms accepts, follow it and cancel it. No secret value ever appears in an output."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from confide.client.sms import SmsClient
from confide.sms.tasks import TaskOrder
from tests.acceptance.test_cli_up_platform import Up, make_bundle, up  # noqa: F401 (fixture)

APP_SECRET = "APP-DEV-SECRET-4242"
REQUESTER_SECRET = "REQUESTER-SECRET-x1-7373"


def test_a_new_user_deploys_and_queues_a_task_the_sms_accepts(up: Up) -> None:  # noqa: F811
    alice = up.wallet("alice")
    # An app: measured, uploaded, signed, registered with the hub and the sms.
    bundle = make_bundle(up, "alice", "poly")
    deployed = up.ok("alice", "app", "deploy", bundle)
    app, measurement = str(deployed["address"]), str(deployed["measurement"])
    assert measurement == str(up.ok("alice", "app", "measure", bundle)["measurement"])
    assert len(str(deployed["bundle"])) == 64
    shown = up.ok("alice", "app", "show", app)
    assert (shown["owner"], shown["measurement"], shown["bundle"]) == (
        alice,
        measurement,
        deployed["bundle"],
    )
    assert [a["address"] for a in up.ok("alice", "app", "list", "--owner", alice)["list"]] == [app]
    # A dataset: a volume and its key file, uploaded as one blob, its tag the checksum.
    data = up.root / "alice" / "data"
    data.mkdir()
    (data / "x.csv").write_text("x\n3\n")
    volume = up.root / "alice" / "volume"
    encrypted = up.ok("alice", "dataset", "encrypt", data, volume)
    dataset_deployed = up.ok("alice", "dataset", "deploy", volume)
    dataset = str(dataset_deployed["address"])
    assert dataset_deployed["checksum"] == encrypted["tag"]
    assert up.ok("alice", "dataset", "show", dataset)["checksum"] == encrypted["tag"]
    key_file = str(encrypted["key_file"])
    pushed_key = up.ok(
        "alice", "dataset", "push-secret", dataset, "--secret-file", key_file, "--any-app"
    )
    assert pushed_key == {"dataset": dataset, "version": 1}
    # A workerpool with a second worker.
    pool = up.ok("alice", "workerpool", "deploy", "alices-pool")
    assert (pool["name"], pool["owner"]) == ("alices-pool", alice)
    worker = "0x" + "77" * 20
    up.ok("alice", "workerpool", "add-worker", str(pool["address"]), worker)
    members = up.ok("alice", "workerpool", "show", str(pool["address"]))["members"]
    assert members == sorted([alice, worker])
    # The app secret, released to the measurement alice's own wallet signed at deploy.
    pushed = up.ok("alice", "app", "push-secret", app, "--secret-value", APP_SECRET)
    assert pushed == {"app": app, "version": 1}
    assert up.ok("alice", "app", "check-secret", app)["exists"] is True
    # A requester secret, and a task mapping it.
    assert up.ok("alice", "requester", "push-secret", "x1", "--secret-value", REQUESTER_SECRET) == {
        "name": "x1",
        "version": 1,
    }
    queued = up.ok(
        "alice",
        "app",
        "run",
        app,
        "--workerpool",
        str(pool["address"]),
        "--dataset",
        dataset,
        "--secret",
        "1=x1",
        "--args",
        "--x 3",
        "--category",
        "S",
        "--valid-for",
        "2h",
    )
    task = str(queued["task"])
    assert queued["status"] == "RECEIVED"
    view = up.ok("alice", "task", "show", task)
    assert (view["status"], view["cause"], view["workerpool"], view["attempts"]) == (
        "RECEIVED",
        None,
        pool["address"],
        0,
    )
    order = TaskOrder.from_json(view["order"])
    assert order.task_id() == task
    assert str(order.app_measurement) == measurement
    assert order.dataset_checksum == encrypted["tag"]
    assert order.tee == ("sim",) and order.category == "S" and order.args == "--x 3"
    # The order pins the sms's key and the result key made and registered on first need.
    sms = SmsClient(f"{up.url}/sms")
    assert order.sms_key == sms.key().hex()
    result_key = Path(up.env("alice")["CONFIDE_HOME"]) / "result-key"
    assert result_key.stat().st_mode & 0o777 == 0o600
    registered = sms.result_key(alice)
    assert registered is not None and registered["sha256"] == order.result_key
    # The sms accepts the order (what the hub asked before queueing it).
    assert sms.check_order(order, str(view["signature"]))["problems"] == []
    listed = up.ok("alice", "task", "list", "--status", "received")["list"]
    assert [t["task"] for t in listed] == [task]
    # Cancelled: at the hub (FAILED, CANCELLED_BY_REQUESTER) and at the sms.
    cancelled = up.ok("alice", "task", "cancel", task)
    assert cancelled["cancelled"] is True
    view = up.ok("alice", "task", "show", task)
    assert (view["status"], view["cause"]) == ("FAILED", "CANCELLED_BY_REQUESTER")
    problems = sms.check_order(order, str(view["signature"]))["problems"]
    assert any("cancel" in problem for problem in problems), problems
    # Nothing secret ever printed.
    for output in up.outputs:
        assert APP_SECRET not in output
        assert REQUESTER_SECRET not in output
        assert Path(key_file).read_text().strip() not in output
        assert "PRIVATE KEY" not in output


def test_the_default_pool_of_up_takes_tasks_by_name_in_simulation(up: Up) -> None:  # noqa: F811
    up.wallet("carol")
    app = str(up.ok("carol", "app", "deploy", make_bundle(up, "carol", "hello"))["address"])
    queued = up.ok("carol", "app", "run", app, "--workerpool", "default", "--no-encrypt-result")
    view = up.ok("carol", "task", "show", str(queued["task"]))
    pools = httpx.get(f"{up.url}/v1/workerpools").json()
    default = next(p["address"] for p in pools if p["name"] == "default")
    assert view["workerpool"] == default
    assert view["order"]["tee"] == ["sim"] and view["order"]["tolerate"] == ["simulation"]
    # not encrypted, but the logs are still sealed to the requester's result key
    assert view["order"]["encrypt_result"] is False and view["order"]["result_key"]
    assert (Path(up.env("carol")["CONFIDE_HOME"]) / "result-key").exists()
    text = up.cli("carol", "task", "show", str(queued["task"]))
    assert text.returncode == 0 and "RECEIVED" in text.stdout
    assert json.loads(up.cli("carol", "task", "list", "--json").stdout)[0]["task"] == queued["task"]
