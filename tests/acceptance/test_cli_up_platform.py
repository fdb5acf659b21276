"""``confide up`` as a user starts it: one process, one port, hub at the root, sms at
``/sms``, storage at ``/storage``; and the helpers the other ``test_cli_*`` modules of
issue 18 start it with (a real ``confide up`` subprocess on a free loopback port, its data
and every user's ``CONFIDE_HOME`` under the test's temporary directory)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CONFIDE, assert_refusal, quick_wallet, run_cli
from tests.integration.sms_server import free_port

PASSWORD = "correct horse"
Env = dict[str, str]


@dataclass
class Up:
    """A running ``confide up`` and the users who talk to it."""

    url: str
    home: Path
    root: Path
    process: subprocess.Popen[str]
    outputs: list[str] = field(default_factory=list)  # every CLI output, to search for leaks

    def env(self, name: str) -> Env:
        """The environment of user ``name`` (their own CONFIDE_HOME), the hub set."""
        return {
            **os.environ,
            "CONFIDE_HOME": str(self.root / name),
            "CONFIDE_HUB": self.url,
            "CONFIDE_WALLET_PASSWORD": PASSWORD,
            "CONFIDE_SMS": "",
            "CONFIDE_STORAGE": "",
        }

    def cli(self, user: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        done = run_cli(*args, env=self.env(user), cwd=self.root)
        self.outputs += [done.stdout, done.stderr]
        return done

    def ok(self, user: str, *args: str | Path) -> dict[str, Any]:
        """Run a ``--json`` command that must succeed; its one JSON document."""
        done = self.cli(user, *args, "--json")
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        document = json.loads(done.stdout)
        assert isinstance(document, dict | list)
        return document if isinstance(document, dict) else {"list": document}

    def wallet(self, user: str) -> str:
        """Create ``user``'s wallet (a quick keystore: tests.conftest.quick_wallet); their
        address. `confide wallet create` itself is tested in test_cli_wallet.py."""
        return quick_wallet(self.root / user, PASSWORD)


def start_up(root: Path, *extra: str) -> Up:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    home = root / "server"
    process = subprocess.Popen(
        [*CONFIDE, "up", "--port", str(port), "--home", str(home), *extra],
        env={**os.environ, "CONFIDE_HOME": str(root / "nobody")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(f"confide up did not start: {process.communicate()}")
        time.sleep(0.05)
    return Up(url, home, root, process)


def stop_up(up: Up) -> tuple[int, str]:
    up.process.send_signal(signal.SIGTERM)
    _, err = up.process.communicate(timeout=60)
    return up.process.returncode, err


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One ``confide up`` for a test module (each test makes its own users)."""
    # no workers: these tests look at tasks while they are queued
    started = start_up(tmp_path_factory.mktemp("up"), "--workers", "0")
    try:
        yield started
    finally:
        stop_up(started)


def make_bundle(up: Up, user: str, name: str) -> Path:
    directory = up.root / user / name
    assert up.cli(user, "app", "init", directory, "--name", name).returncode == 0
    return directory


def test_up_serves_hub_sms_and_storage_on_one_port_and_says_simulation(tmp_path: Path) -> None:
    started = start_up(tmp_path, "--workers", "2")
    try:
        info = httpx.get(f"{started.url}/v1/info").json()
        assert info["service"] == "hub" and info["embedded"] is True
        assert info["sms"] == f"{started.url}/sms"
        assert info["storage"] == f"{started.url}/storage"
        sms = httpx.get(f"{started.url}/sms/v1/info").json()
        assert sms["service"] == "sms" and sms["allow_sim"] is True
        storage = httpx.get(f"{started.url}/storage/v1/info").json()
        assert storage["service"] == "storage"
        pools = httpx.get(f"{started.url}/v1/workerpools").json()
        assert [p["name"] for p in pools] == ["default"]
        # The operator wallet is up's own: never the user's wallet.json.
        operator = json.loads((started.home / "up" / "operator-wallet.json").read_text())
        assert pools[0]["owner"] == "0x" + operator["address"].lower().removeprefix("0x")
        assert not (started.home / "wallet.json").exists()
        assert not (tmp_path / "nobody" / "wallet.json").exists()
        for name in ("hub.db", "sms.db", "storage.db"):
            assert (started.home / "up" / name).is_file()
    finally:
        code, err = stop_up(started)
    assert code == 0, err
    assert "simulation is accepted here: it protects nothing" in err
    assert "2 workers (sim)" in err
    assert "shut down cleanly" in err


def test_up_restarts_on_its_data_with_the_same_default_pool(tmp_path: Path) -> None:
    first = start_up(tmp_path)
    pools = httpx.get(f"{first.url}/v1/workerpools").json()
    deployment = httpx.get(f"{first.url}/v1/info").json()["deployment_id"]
    assert stop_up(first)[0] == 0
    again = start_up(tmp_path)
    try:
        assert httpx.get(f"{again.url}/v1/workerpools").json() == pools
        assert httpx.get(f"{again.url}/v1/info").json()["deployment_id"] == deployment
    finally:
        stop_up(again)


def test_an_unreachable_hub_names_the_url_and_confide_up(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "CONFIDE_HOME": str(tmp_path), "CONFIDE_HUB": url}
    anyone = "0x" + "ab" * 20
    for args in (
        ("app", "list"),
        ("workerpool", "show", "default"),
        ("task", "list", "--requester", anyone),
    ):
        done = run_cli(*args, env=env)
        assert_refusal(done, f"cannot reach the hub at {url}", "confide up")
    as_json = run_cli("app", "list", "--json", env=env)
    assert json.loads(as_json.stdout)["ok"] is False
    # A command for the sms, with no sms named: the hub is asked which, so it says both.
    secret = run_cli("app", "check-secret", anyone, env={**env, "CONFIDE_SMS": ""})
    assert_refusal(secret, f"cannot reach the hub at {url}", "confide up", "--sms URL")


def test_up_refuses_a_port_in_use(up: Up) -> None:
    port = up.url.rsplit(":", 1)[1]
    done = run_cli("up", "--port", port, "--home", up.root / "second")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
