"""``confide app|dataset|requester|result`` secret commands as a user types them, against
a real ``confide serve sms`` that knows Alice's app and dataset from the records she
signed and pushed to it (``POST /v1/records``)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confide.attestation.measurement import Measurement
from confide.crypto.wallet import Wallet, save_wallet
from confide.records import OwnerRecord
from tests.conftest import CONFIDE, assert_refusal, run_cli
from tests.integration.fake_hub import FakeHub, push_record, running_hub
from tests.integration.sms_server import free_port

ALICE = Wallet.generate()
DEPLOYMENT = "acceptance"
SGX = "sgx:" + "ab" * 32
APP_RECORD = OwnerRecord.app(
    DEPLOYMENT, ALICE.address, "app", bundle="bb" * 32, measurement=Measurement.parse(SGX)
).sign(ALICE)
DATASET_RECORD = OwnerRecord.dataset(
    DEPLOYMENT, ALICE.address, "data", blob="cc" * 32, checksum="dd" * 32
).sign(ALICE)
APP = APP_RECORD.address
DATASET = DATASET_RECORD.address
UNKNOWN = "0x" + "0f" * 20
Env = dict[str, str]


def _address(env: Env) -> str:
    assert run_cli("wallet", "create", env=env).returncode == 0
    return str(json.loads(run_cli("wallet", "show", "--json", env=env).stdout)["address"])


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """A hub serving Alice's records, which the sms fetches and verifies."""
    with running_hub(FakeHub(deployment=DEPLOYMENT)) as served:
        served.put(APP_RECORD)
        served.put(DATASET_RECORD)
        yield served


@pytest.fixture
def users(tmp_path: Path, hub: FakeHub) -> Iterator[tuple[Env, Env]]:
    """Alice (owns APP and DATASET: her signed records pushed to the sms) and Bob,
    against one sms."""
    port = free_port()
    base = {
        **os.environ,
        "CONFIDE_SMS": f"http://127.0.0.1:{port}",
        "CONFIDE_WALLET_PASSWORD": "pw",
    }
    alice = {**base, "CONFIDE_HOME": str(tmp_path / "alice")}
    bob = {**base, "CONFIDE_HOME": str(tmp_path / "bob")}
    (tmp_path / "alice").mkdir()
    save_wallet(tmp_path / "alice" / "wallet.json", ALICE, "pw")
    _address(bob)
    server = subprocess.Popen(
        [*CONFIDE, "serve", "sms", "--port", str(port), "--hub", hub.url],
        env={**base, "CONFIDE_HOME": str(tmp_path / "server")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr
            time.sleep(0.05)
    for record in (APP_RECORD, DATASET_RECORD):
        pushed = push_record(base["CONFIDE_SMS"], record, ALICE)
        assert pushed.status_code == 200, pushed.text
    try:
        yield alice, bob
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_app_secret(users: tuple[Env, Env]) -> None:
    alice, bob = users
    owner = json.loads(run_cli("wallet", "show", "--json", env=alice).stdout)["address"]
    missing = run_cli("app", "check-secret", APP, env=alice)
    assert (missing.returncode, missing.stdout) == (1, f"app secret of {APP} is not set\n")
    pushed = run_cli(
        "app",
        "push-secret",
        APP.upper().replace("0X", "0x"),
        "--secret-value",
        "APP-SECRET-77",
        "--tee",
        "sgx,tdx",
        "--tolerate",
        "outdated-tcb",
        "--app-measurement",
        SGX,
        env=alice,
    )
    assert (pushed.returncode, pushed.stdout) == (0, f"app secret of {APP} stored (version 1)\n")
    checked = run_cli("app", "check-secret", APP, env=bob)  # public: anyone may ask
    assert (checked.returncode, checked.stdout) == (0, f"app secret of {APP} is set\n")
    as_json = run_cli("app", "check-secret", APP, "--json", env=alice)
    assert json.loads(as_json.stdout) == {"app": APP, "exists": True}
    # Without --app-measurement the CLI reads the app record from the hub (the CLI's
    # tests); the sms refuses a push without app= (test_sms_secrets_http).
    again = run_cli(
        "app",
        "push-secret",
        APP,
        "--secret-value",
        "APP-SECRET-78",
        "--app-measurement",
        SGX,
        env=alice,
    )
    assert_refusal(again, "409", "use --update")
    updated = subprocess.run(
        [*CONFIDE, "app", "push-secret", APP, "--update", "--app-measurement", SGX, "--json"],
        input="APP-SECRET-79\n",
        env=alice,
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(updated.stdout) == {"app": APP, "version": 2}
    stolen = run_cli(
        "app",
        "push-secret",
        APP,
        "--secret-value",
        "APP-SECRET-80",
        "--update",
        "--app-measurement",
        SGX,
        env=bob,
    )
    assert_refusal(stolen, "403", f"only the app's owner {owner}")
    unknown = run_cli(
        "app",
        "push-secret",
        UNKNOWN,
        "--secret-value",
        "APP-SECRET-81",
        "--app-measurement",
        SGX,
        env=alice,
    )
    assert_refusal(unknown, "404", f"app {UNKNOWN} is not registered")
    bad_tee = run_cli(
        "app",
        "push-secret",
        APP,
        "--secret-value",
        "APP-SECRET-82",
        "--tee",
        "sgx,sev",
        "--app-measurement",
        SGX,
        "--json",
        env=alice,
    )
    assert_refusal(bad_tee, "unknown TEE type 'sev'")
    assert json.loads(bad_tee.stdout)["ok"] is False
    not_an_app = run_cli("app", "check-secret", "0x12", env=alice)
    assert_refusal(not_an_app, "'0x12' is not a wallet address")
    outputs = (missing, pushed, checked, as_json, again, updated, stolen, unknown, bad_tee)
    assert not any("APP-SECRET" in p.stdout + p.stderr for p in outputs)


def test_dataset_key_and_requester_policy(users: tuple[Env, Env], tmp_path: Path) -> None:
    alice, bob = users
    key_file = tmp_path / "dataset.key"
    key_file.write_text("DATASET-KEY-55")
    pushed = run_cli(
        "dataset",
        "push-secret",
        DATASET,
        "--secret-file",
        key_file,
        "--tee",
        "sgx",
        "--app-measurement",
        SGX,
        "--requester",
        UNKNOWN.upper().replace("0X", "0x"),
        "--requester",
        APP,
        "--workerpool",
        UNKNOWN,
        "--json",
        env=alice,
    )
    assert json.loads(pushed.stdout) == {"dataset": DATASET, "version": 1}
    checked = run_cli("dataset", "check-secret", DATASET, env=bob)
    assert (checked.returncode, checked.stdout) == (0, f"dataset key of {DATASET} is set\n")
    unknown = run_cli("dataset", "check-secret", UNKNOWN, "--json", env=alice)
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout) == {"dataset": UNKNOWN, "exists": False}
    stolen = run_cli(
        "dataset", "push-secret", DATASET, "--secret-value", "DATASET-KEY-56", "--update", env=bob
    )
    assert_refusal(stolen, "403", "dataset's owner")
    bad_app = run_cli(
        "dataset",
        "push-secret",
        DATASET,
        "--secret-value",
        "DATASET-KEY-57",
        "--update",
        "--app-measurement",
        "ab" * 32,
        env=alice,
    )
    assert_refusal(bad_app, "is not typed")
    requester = run_cli(
        "requester",
        "push-secret",
        "x1",
        "--secret-value",
        "REQ-SECRET-58",
        "--tee",
        "tdx",
        "--tolerate",
        "sw-hardening-needed",
        env=alice,
    )
    assert requester.stdout == 'secret "x1" stored (version 1)\n'
    bad_toleration = run_cli(
        "requester",
        "push-secret",
        "x2",
        "--secret-value",
        "REQ-SECRET-59",
        "--tolerate",
        "anything",
        env=alice,
    )
    assert_refusal(bad_toleration, "unknown toleration 'anything'")
    outputs = (pushed, checked, unknown, stolen, bad_app, requester, bad_toleration)
    text = "".join(p.stdout + p.stderr for p in outputs)
    assert "DATASET-KEY" not in text and "REQ-SECRET" not in text


def test_result_encryption_keypair(users: tuple[Env, Env], tmp_path: Path) -> None:
    alice, bob = users
    made = run_cli("result", "generate-encryption-keypair", "--json", env=alice)
    assert made.returncode == 0, made.stderr
    first = json.loads(made.stdout)
    key_path = Path(alice["CONFIDE_HOME"]) / "result-key"
    assert first["key_file"] == str(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    private_pem = key_path.read_text()
    assert_refusal(
        run_cli("result", "generate-encryption-keypair", env=alice), "already exists", "--force"
    )
    assert key_path.read_text() == private_pem
    replaced = run_cli("result", "generate-encryption-keypair", "--force", env=alice)
    lines = replaced.stdout.splitlines()
    assert lines[0].startswith("public key ") and lines[1].startswith("sha256 ")
    public, digest = lines[0].removeprefix("public key "), lines[1].removeprefix("sha256 ")
    assert public != first["public_key"] and "push-encryption-key" in replaced.stderr
    owner = json.loads(run_cli("wallet", "show", "--json", env=alice).stdout)["address"]
    pushed = run_cli("result", "push-encryption-key", env=alice)
    assert pushed.stdout == (
        f"result encryption key of {owner} stored (version 1)\nsha256 {digest}\n"
    )
    served = httpx.get(f"{alice['CONFIDE_SMS']}/v1/requesters/{owner}/result-key").json()
    assert (served["public_key"], served["sha256"], served["version"]) == (public, digest, 1)
    hex_file = tmp_path / "public.hex"
    hex_file.write_text(first["public_key"] + "\n")
    by_file = run_cli("result", "push-encryption-key", "--key-file", hex_file, "--json", env=bob)
    bob_address = json.loads(run_cli("wallet", "show", "--json", env=bob).stdout)["address"]
    assert json.loads(by_file.stdout) == {
        "address": bob_address,
        "sha256": first["sha256"],
        "version": 1,
    }
    none = run_cli("result", "push-encryption-key", env=bob)  # bob has no key pair
    assert_refusal(none, "result-key does not exist", "generate-encryption-keypair")
    private_body = "".join(private_pem.splitlines()[1:-1])
    new_body = "".join(key_path.read_text().splitlines()[1:-1])
    for proc in (made, replaced, pushed, by_file, none):
        assert private_body not in proc.stdout + proc.stderr
        assert new_body not in proc.stdout + proc.stderr


def test_serve_sms_refuses_a_bad_hub_url_and_has_no_registry_option(tmp_path: Path) -> None:
    env = {**os.environ, "CONFIDE_HOME": str(tmp_path / "home")}
    proc = run_cli("serve", "sms", "--port", str(free_port()), "--hub", "ftp://hub", env=env)
    assert_refusal(proc, "--hub 'ftp://hub' is not an http(s) URL")
    gone = run_cli("serve", "sms", "--registry", tmp_path / "r.yml", env=env)
    assert gone.returncode == 2 and "--registry" in gone.stderr
