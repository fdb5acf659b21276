"""Collateral sources for DCAP verification: a PCCS that cannot be reached is a refusal,
and an offline directory is looked up by the quote's FMSPC."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from confide.attestation import Evidence
from confide.attestation.dcap import CollateralDirectory, DcapVerifier, PccsCollateral
from confide.errors import AttestationError
from tests.vectors.dcap_vectors import SGX, TDX


def test_pccs_failure_is_a_refusal_not_a_crash() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = PccsCollateral(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(AttestationError, match="cannot fetch collateral"):
        source.collateral(SGX.quote.read_bytes())


def test_collateral_directory_by_fmspc(tmp_path: Path) -> None:
    quote = TDX.quote.read_bytes()
    verifier = DcapVerifier("tdx", CollateralDirectory(tmp_path))
    with pytest.raises(AttestationError, match="no collateral for FMSPC b0c06f000000"):
        verifier.appraise(Evidence("tdx", quote), TDX.now)
    (tmp_path / "b0c06f000000.json").write_text(TDX.collateral.read_text())
    assert verifier.appraise(Evidence("tdx", quote), TDX.now).tcb_status == "UpToDate"
    json.loads(TDX.collateral.read_text())  # the vector itself is untouched
