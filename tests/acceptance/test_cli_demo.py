"""``confide demo``: the seed tutorial, end to end, as `make demo` runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from confide.demo.cubic import APP_SECRET, EXPECTED


def confide(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confide", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_tutorial_computes_f_of_3_in_both_languages_and_verifies_the_results() -> None:
    done = confide("demo", "--lang", "both", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is True
    runs = {run["language"]: run for run in document["runs"]}
    assert set(runs) == {"python", "node"}
    for run in runs.values():
        assert run["x"] == 3 and run["result"] == EXPECTED == 56
        assert run["verified"] is True
        assert run["task"].startswith("0x") and len(run["task"]) == 66
        assert {"app deploy", "app run", "task show --download", "result verify"} <= set(
            run["steps"]
        )
    assert set(document["setup"]) == {"wallet create", "requester push-secret"}
    # the second seed: the copy DApp's outputs equal its inputs; the older input refused
    dapp = document["copy_dapp"]
    assert dapp["pulled_back"] is True and len(dapp["output_tag"]) == 64
    assert "is not the session's current version" in dapp["rollback_refused"]
    assert {"volume push", "dapp run --push", "volume pull"} <= set(dapp["steps"])
    # every step is shown as the command a user types; no secret value is ever printed
    assert "$ confide app run" in done.stderr and "--secret 1=x1 --watch" in done.stderr
    assert APP_SECRET not in done.stdout + done.stderr


def test_an_unknown_language_is_refused_before_anything_starts() -> None:
    done = confide("demo", "--lang", "cobol")
    assert done.returncode == 1
    assert done.stderr.startswith("error: --lang is python, node or both")
    assert "Traceback" not in done.stderr
