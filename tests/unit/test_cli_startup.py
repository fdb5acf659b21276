"""What a short command imports: only what it needs, so it starts fast.

Timings live in bench/cli_bench.py; this checks the cause, which does not depend on how
busy the machine is: the modules a command line loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from confide.crypto.wallet import Wallet, save_wallet

# py_ecc's BLS code (0.5 s, via eth-account), the database layer and the volume engine.
NEVER_FOR_A_SIGNED_COMMAND = ("eth_account", "eth_keyfile", "py_ecc", "sqlalchemy")
NEVER_FOR_WALLET_SHOW = (
    *NEVER_FOR_A_SIGNED_COMMAND,
    "httpx",
    "coincurve",
    "cryptography",
    "confide.volume",
    "confide.client",
)

PROBE = """
import json, sys
from confide.cli.main import run
status = run(sys.argv[1:])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _modules(home: Path, *argv: str) -> tuple[int, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"CONFIDE_HOME": str(home), "CONFIDE_WALLET_PASSWORD": "pw", "PATH": "/usr/bin"},
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["status"], set(report["modules"])


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


def test_wallet_show_loads_no_signer_cipher_or_client(tmp_path: Path) -> None:
    wallet = Wallet.generate()
    save_wallet(tmp_path / "wallet.json", wallet, "pw")
    status, modules = _modules(tmp_path, "wallet", "show")
    assert status == 0
    assert _loaded(modules, NEVER_FOR_WALLET_SHOW) == []
    assert "confide.cli.volume" not in modules  # only the named command group


def test_a_signed_command_loads_no_bls_code_or_database_layer(tmp_path: Path) -> None:
    save_wallet(tmp_path / "wallet.json", Wallet.generate(), "pw")
    # Nothing listens on port 9: the command unlocks the wallet, then fails to connect.
    argv = ["requester", "push-secret", "name", "--secret-value", "v"]
    status, modules = _modules(tmp_path, *argv, "--sms", "http://127.0.0.1:9")
    assert status == 1
    assert "confide.crypto.keystore" in modules and "confide.client.sms" in modules
    assert _loaded(modules, NEVER_FOR_A_SIGNED_COMMAND) == []
    assert _loaded(modules, ("confide.volume", "confide.sms.secrets", "confide.db")) == []
