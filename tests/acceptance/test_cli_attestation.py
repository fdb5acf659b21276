"""``confide app`` and ``confide attestation verify`` as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import assert_refusal, run_cli
from tests.vectors.dcap_vectors import (
    SGX,
    SGX_MR_ENCLAVE,
    TDX,
    TDX_OUTDATED,
)


def test_app_init_then_measure(tmp_path: Path) -> None:
    init = run_cli("app", "init", tmp_path / "hello", "--lang", "node", "--json")
    assert init.returncode == 0, init.stderr
    created = json.loads(init.stdout)
    measure = run_cli("app", "measure", tmp_path / "hello", "--json")
    assert json.loads(measure.stdout) == {"measurement": created["measurement"]}
    text = run_cli("app", "measure", tmp_path / "hello")
    assert text.stdout.strip() == created["measurement"]
    assert_refusal(run_cli("app", "init", tmp_path / "hello", "--lang", "node"), "already exists")
    assert_refusal(run_cli("app", "measure", tmp_path), "confide app init")


def test_verify_sgx_sample_default_policy_refuses_naming_reasons() -> None:
    proc = run_cli(
        "attestation",
        "verify",
        SGX.quote,
        "--collateral",
        SGX.collateral,
        "--now",
        str(SGX.now),
        "--json",
    )
    assert proc.returncode == 1
    verdict = json.loads(proc.stdout)
    assert verdict == {
        "tee": "sgx",
        "ok": False,
        "tcb_status": "ConfigurationAndSWHardeningNeeded",
        "advisories": ["INTEL-SA-00289", "INTEL-SA-00615"],
        "measurement": f"sgx:{SGX_MR_ENCLAVE}",
        "reasons": [
            "TCB status ConfigurationAndSWHardeningNeeded not tolerated "
            "(needs tolerate: configuration-needed, sw-hardening-needed)",
            "advisory INTEL-SA-00289 not ignored",
            "advisory INTEL-SA-00615 not ignored",
        ],
    }
    assert proc.stderr.startswith("error: attestation refused: TCB status")


def test_verify_sgx_sample_with_a_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(
        f"measurements: ['sgx:{SGX_MR_ENCLAVE}']\n"
        "tolerate: [sw-hardening-needed, configuration-needed]\n"
        "ignore_advisories: [INTEL-SA-00289, INTEL-SA-00615]\n"
    )
    hello = b"Hello, world!".hex()
    proc = run_cli(
        "attestation",
        "verify",
        SGX.quote,
        "--collateral",
        SGX.collateral,
        "--now",
        str(SGX.now),
        "--policy",
        policy,
        "--report-data",
        hello,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verdict      accepted" in proc.stdout
    wrong = run_cli(
        "attestation",
        "verify",
        SGX.quote,
        "--collateral",
        SGX.collateral,
        "--now",
        str(SGX.now),
        "--policy",
        policy,
        "--report-data",
        "00",
        "--json",
    )
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["reasons"][0].startswith("report data does not match")


def test_verify_tdx_samples() -> None:
    good = run_cli(
        "attestation",
        "verify",
        TDX.quote,
        "--collateral",
        TDX.collateral,
        "--now",
        str(TDX.now),
        "--json",
    )
    assert good.returncode == 0
    assert json.loads(good.stdout)["tcb_status"] == "UpToDate"
    outdated = run_cli(
        "attestation",
        "verify",
        TDX_OUTDATED.quote,
        "--collateral",
        TDX_OUTDATED.collateral,
        "--now",
        str(TDX_OUTDATED.now),
        "--json",
    )
    assert outdated.returncode == 1
    assert json.loads(outdated.stdout)["reasons"] == [
        "quote verification failed: No matching TCB level found"
    ]
    late = run_cli(
        "attestation",
        "verify",
        TDX.quote,
        "--collateral",
        TDX.collateral,
        "--now",
        str(TDX.now + 90 * 86400),
        "--json",
    )
    assert late.returncode == 1
    assert "expired" in json.loads(late.stdout)["reasons"][0]


def test_unreadable_quote_gives_a_verdict_not_a_crash(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00" * 100)
    proc = run_cli("attestation", "verify", garbage, "--collateral", SGX.collateral, "--json")
    assert proc.returncode == 1
    verdict = json.loads(proc.stdout)
    assert verdict["ok"] is False and verdict["tee"] is None
    assert verdict["reasons"][0].startswith("quote cannot be parsed")


def test_bad_inputs(tmp_path: Path) -> None:
    bad_policy = tmp_path / "p.yml"
    for policy, reason in (
        ("tolerate: [everything]\n", "unknown toleration 'everything'"),
        ("measurements: ['" + "33" * 32 + "']\n", "is not typed"),
    ):
        bad_policy.write_text(policy)
        command = ("attestation", "verify", SGX.quote, "--collateral", SGX.collateral)
        assert_refusal(run_cli(*command, "--policy", bad_policy), reason)
    assert_refusal(
        run_cli("attestation", "verify", SGX.quote, "--collateral", tmp_path / "none.json"),
        "cannot read collateral",
    )
    too_long = run_cli(
        "attestation",
        "verify",
        SGX.quote,
        "--collateral",
        SGX.collateral,
        "--report-data",
        "00" * 65,
    )
    assert too_long.returncode == 2


def test_cli_input_errors_exit_2_or_give_a_verdict(tmp_path: Path) -> None:
    for now in ("-1", str(2**63)):
        proc = run_cli(
            "attestation", "verify", SGX.quote, "--collateral", SGX.collateral, "--now", now
        )
        assert proc.returncode == 2, proc.stderr
    assert run_cli("app", "init", tmp_path / "x", "--lang", "ruby").returncode == 2
    missing = run_cli(
        "attestation", "verify", tmp_path / "none", "--collateral", SGX.collateral, "--json"
    )
    assert missing.returncode == 1
    verdict = json.loads(missing.stdout)
    assert verdict["ok"] is False and verdict["reasons"][0].startswith("cannot read")
    binary = tmp_path / "policy.yml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert_refusal(
        run_cli(
            "attestation", "verify", SGX.quote, "--collateral", SGX.collateral, "--policy", binary
        ),
        "not valid YAML",
    )
