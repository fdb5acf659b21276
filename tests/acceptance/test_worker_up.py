"""``confide up --workers 2``: its workers run the default pool's tasks for real (sim),
and at SIGTERM it stops cleanly (exit 0)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.acceptance.test_cli_up_platform import make_bundle, start_up, stop_up


def test_up_runs_tasks_with_its_workers(tmp_path: Path) -> None:
    up = start_up(tmp_path, "--workers", "2")
    try:
        up.wallet("tom")
        app = str(up.ok("tom", "app", "deploy", make_bundle(up, "tom", "hello"))["address"])
        tasks = [
            str(up.ok("tom", "app", "run", app, "--workerpool", "default")["task"])
            for _ in range(3)
        ]
        deadline = time.monotonic() + 120
        views: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            views = [httpx.get(f"{up.url}/v1/tasks/{t}").json() for t in tasks]
            if all(v["status"] in {"COMPLETED", "FAILED", "TIMEOUT"} for v in views):
                break
            time.sleep(0.2)
        assert [v["status"] for v in views] == ["COMPLETED"] * 3, views
        assert all(v["attempts"] == 1 for v in views)
    finally:
        code, err = stop_up(up)
    assert code == 0, err
    assert "2 workers (sim) for the default workerpool" in err
    assert "shut down cleanly" in err
    assert err.count(": COMPLETED") == 3
