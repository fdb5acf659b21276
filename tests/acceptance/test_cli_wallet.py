"""``confide wallet`` as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from confide.crypto.wallet import load_wallet
from confide.errors import WalletError
from tests.conftest import CONFIDE, assert_refusal, run_cli

KEY_11 = "0x" + "11" * 32
ADDRESS_11 = "0x19e7e376e7c213b7e7e7e46cc70a5dd086daff2a"  # the well-known address of 0x11…11


def _env(home: Path, password: str | None = "correct horse") -> dict[str, str]:
    env = {**os.environ, "CONFIDE_HOME": str(home)}
    env.pop("CONFIDE_WALLET_PASSWORD", None)
    if password is not None:
        env["CONFIDE_WALLET_PASSWORD"] = password
    return env


def test_create_show_and_refuse_to_overwrite(tmp_path: Path) -> None:
    created = run_cli("wallet", "create", "--json", env=_env(tmp_path))
    assert created.returncode == 0, created.stderr
    document = json.loads(created.stdout)
    path = tmp_path / "wallet.json"
    assert document == {"address": document["address"], "wallet": str(path)}
    assert path.stat().st_mode & 0o777 == 0o600
    shown = run_cli("wallet", "show", "--json", env=_env(tmp_path, password=None))
    assert json.loads(shown.stdout) == {"address": document["address"]}
    before = path.read_text()
    assert_refusal(run_cli("wallet", "create", env=_env(tmp_path)), "already exists")
    assert path.read_text() == before
    assert load_wallet(path, "correct horse").address == document["address"]
    with pytest.raises(WalletError, match="wrong password"):
        load_wallet(path, "wrong")


def test_import_from_stdin_and_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CONFIDE, "wallet", "import", "--json"],
        input=KEY_11 + "\n",
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["address"] == ADDRESS_11
    assert "11" * 32 not in proc.stdout + proc.stderr
    assert "11" * 32 not in (tmp_path / "wallet.json").read_text()  # encrypted at rest
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY_11[2:] + "\n")
    other = run_cli(
        "wallet",
        "import",
        "--private-key-file",
        key_file,
        "--wallet",
        tmp_path / "w2.json",
        env=_env(tmp_path),
    )
    assert other.stdout.strip() == ADDRESS_11


def test_refusals(tmp_path: Path) -> None:
    no_password = run_cli("wallet", "create", env=_env(tmp_path, password=None))
    assert_refusal(no_password, "CONFIDE_WALLET_PASSWORD")
    assert not (tmp_path / "wallet.json").exists()
    assert_refusal(run_cli("wallet", "show", env=_env(tmp_path)), "confide wallet create")
    (tmp_path / "wallet.json").write_text("{not json")
    assert_refusal(run_cli("wallet", "show", env=_env(tmp_path)), "not a wallet keystore")
    bad_key = subprocess.run(
        [*CONFIDE, "wallet", "import", "--wallet", str(tmp_path / "w.json")],
        input="zz\n",
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=False,
    )
    assert_refusal(bad_key, "64 hex characters")
