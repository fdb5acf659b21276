"""An SGX quote through Gramine's /dev/attestation files, with a test directory playing
Gramine: FIFOs make the report data and the quote really flow through the files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from confide.errors import AttestationError
from confide.hardware.sgx_quote import generate

REPORT_DATA = bytes(range(64))


def _quote(report_data: bytes) -> bytes:
    return b"SGX-QUOTE-V3" + report_data[::-1]


def _gramine(root: Path, kind: str = "dcap") -> tuple[threading.Thread, list[bytes]]:
    (root / "attestation_type").write_text(kind + "\n")
    os.mkfifo(root / "user_report_data")
    os.mkfifo(root / "quote")
    seen: list[bytes] = []

    def serve() -> None:
        data = (root / "user_report_data").read_bytes()
        seen.append(data)
        (root / "quote").write_bytes(_quote(data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, seen


def test_report_data_goes_in_and_the_quote_comes_out(tmp_path: Path) -> None:
    thread, seen = _gramine(tmp_path)
    made = generate(REPORT_DATA, attestation_dir=tmp_path)
    thread.join(10)
    assert seen == [REPORT_DATA]
    assert made.quote == _quote(REPORT_DATA)
    assert made.attestation_type == "dcap"


def test_an_enclave_without_dcap_attestation_is_refused(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("none\n")
    with pytest.raises(AttestationError, match=r'sgx\.remote_attestation = "dcap"'):
        generate(REPORT_DATA, attestation_dir=tmp_path)
    assert not (tmp_path / "user_report_data").exists()  # nothing was written


def test_outside_gramine_the_error_says_so(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="run inside gramine-sgx"):
        generate(REPORT_DATA, attestation_dir=tmp_path / "missing")
    with pytest.raises(AttestationError, match="64 bytes, not 5"):
        generate(b"short", attestation_dir=tmp_path)


def test_an_empty_quote_is_refused(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("dcap")
    (tmp_path / "quote").write_bytes(b"")
    with pytest.raises(AttestationError, match="empty quote"):
        generate(REPORT_DATA, attestation_dir=tmp_path)
