"""``confide task show|list|cancel`` against ``confide up``: only the requester cancels, a
cancel reaches the sms too, and lists filter by status."""

from __future__ import annotations

import json
import subprocess

from tests.acceptance.test_cli_up_platform import Up, make_bundle, up  # noqa: F401 (fixture)
from tests.conftest import CONFIDE, assert_refusal


def test_only_the_requester_cancels_and_lists_filter(up: Up) -> None:  # noqa: F811
    requester = up.wallet("vera")
    up.wallet("walt")
    app = str(up.ok("vera", "app", "deploy", make_bundle(up, "vera", "tasks"))["address"])
    one = str(up.ok("vera", "app", "run", app, "--workerpool", "default")["task"])
    two = str(up.ok("vera", "app", "run", app, "--workerpool", "default")["task"])
    assert one != two  # two orders for the same work are two tasks
    assert_refusal(up.cli("walt", "task", "cancel", one), "only its requester")
    cancelled = up.ok("vera", "task", "cancel", one)
    assert cancelled == {"task": one, "status": "FAILED", "cancelled": True}
    again = up.cli("vera", "task", "cancel", one)
    assert again.returncode == 0 and "already FAILED" in again.stderr
    failed = up.ok("vera", "task", "list", "--status", "FAILED")["list"]
    received = up.ok("vera", "task", "list", "--status", "RECEIVED")["list"]
    assert [t["task"] for t in failed] == [one]
    assert [t["task"] for t in received] == [two]
    everything = json.loads(up.cli("vera", "task", "list", "--json").stdout)
    assert [t["task"] for t in everything] == [two, one]  # newest first
    assert up.ok("walt", "task", "list")["list"] == []
    theirs = up.ok("walt", "task", "list", "--requester", requester)["list"]
    assert len(theirs) == 2
    text = up.cli("vera", "task", "show", one)
    assert "CANCELLED_BY_REQUESTER" in text.stdout


def test_task_refusals_name_the_task(up: Up) -> None:  # noqa: F811
    up.wallet("xena")
    unknown = "0x" + "ab" * 32
    assert_refusal(up.cli("xena", "task", "show", unknown), f"knows no task {unknown}")
    assert_refusal(up.cli("xena", "task", "cancel", unknown), f"knows no task {unknown}")
    assert_refusal(up.cli("xena", "task", "show", "0x1234"), "'0x1234' is not a task id")


def test_run_watch_follows_the_task_until_it_is_final(up: Up) -> None:  # noqa: F811
    up.wallet("yuri")
    app = str(up.ok("yuri", "app", "deploy", make_bundle(up, "yuri", "watched"))["address"])
    watching = subprocess.Popen(
        [*CONFIDE, "app", "run", app, "--workerpool", "default", "--watch", "--json"],
        env=up.env("yuri"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stderr is not None
    first = watching.stderr.readline()  # "task 0x…: RECEIVED"
    assert first.startswith("task 0x") and first.rstrip().endswith(": RECEIVED"), first
    task = first.split()[1].rstrip(":")
    up.ok("yuri", "task", "cancel", task)
    out, err = watching.communicate(timeout=60)
    assert watching.returncode == 1  # it ended FAILED
    assert json.loads(out) == {"task": task, "status": "FAILED"}
    assert "FAILED (CANCELLED_BY_REQUESTER)" in err
