"""The TD image's typed measurement (tdx:<MRTD>.<RTMR1>.<RTMR2>.<RTMR3>) and the RTMR3
extension with the bundle's hash, the kernel's measurement-register file played by a
FIFO and a thread (read the register, write 48 bytes to extend, read it back)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from confide.attestation.evidence import Appraisal
from confide.attestation.measurement import Measurement
from confide.bundle import init_bundle
from confide.errors import AttestationError
from confide.hardware.td import (
    RTMR3_FILE,
    TdMeasurement,
    bundle_digest,
    expected_rtmr3,
    extend_rtmr3,
    extended,
)

MRTD, R1, R2, R3 = ("a1" * 48, "b2" * 48, "c3" * 48, "d4" * 48)
TD = TdMeasurement(MRTD, R1, R2, R3)


def _appraisal(
    mrtd: str = MRTD, rtmrs: tuple[str, ...] = ("00" * 48, R1, R2, R3), debug: bool = False
) -> Appraisal:
    return Appraisal(
        tee="tdx",
        measurement=Measurement("tdx", mrtd),
        report_data=bytes(64),
        debug=debug,
        tcb_status="UpToDate",
        rtmrs=rtmrs,
        smt_enabled=False,
    )


def test_the_typed_measurement_pins_four_registers_together() -> None:
    text = f"tdx:{MRTD}.{R1}.{R2}.{R3}"
    assert str(TD) == text and TdMeasurement.parse(text.upper().replace("TDX:", "tdx:")) == TD
    with pytest.raises(AttestationError):  # today's parser never takes it for a bare MRTD
        Measurement.parse(text)
    for bad in (f"tdx:{MRTD}", f"sgx:{MRTD}.{R1}.{R2}.{R3}", f"tdx:{MRTD}.{R1}.{R2}.zz"):
        with pytest.raises(AttestationError):
            TdMeasurement.parse(bad)


def test_each_register_that_differs_is_named_and_debug_is_refused() -> None:
    assert TD.reasons(_appraisal()) == []
    assert TD.reasons(_appraisal(mrtd="ff" * 48)) == ["MRTD differs"]
    assert TD.reasons(_appraisal(rtmrs=("00" * 48, R1, "ee" * 48, "ee" * 48))) == [
        "RTMR2 differs",
        "RTMR3 differs",
    ]
    assert TD.reasons(_appraisal(debug=True)) == ["the TD runs with debug attributes: refused"]


def test_todays_policy_enforces_it_with_mrtd_and_rtmr_pins() -> None:
    policy = TD.policy()
    assert policy.pins_tdx_software()
    assert policy.evaluate(_appraisal()) == []
    assert "RTMR3 does not match the policy" in policy.evaluate(
        _appraisal(rtmrs=("00" * 48, R1, R2, "ee" * 48))
    )
    assert "debug-mode enclave not tolerated" in policy.evaluate(_appraisal(debug=True))


def test_rtmr3_is_extended_once_with_the_bundles_hash(tmp_path: Path) -> None:
    bundle = tmp_path / "cubic"
    init_bundle(bundle, "python", "cubic")
    digest = bundle_digest(bundle)
    assert len(digest) == 48
    register = tmp_path / "measurements"
    register.mkdir()
    os.mkfifo(register / RTMR3_FILE)
    written: list[bytes] = []

    def kernel() -> None:
        value = bytes(48)
        (register / RTMR3_FILE).write_bytes(value)  # the caller reads the register
        written.append((register / RTMR3_FILE).read_bytes())  # … extends it
        value = hashlib.sha384(value + written[-1]).digest()
        (register / RTMR3_FILE).write_bytes(value)  # … and reads it back

    thread = threading.Thread(target=kernel, daemon=True)
    thread.start()
    after = extend_rtmr3(digest, register)
    thread.join(10)
    assert written == [digest]
    assert after.hex() == expected_rtmr3(bundle) == extended(bytes(48), digest).hex()


def test_the_bundle_hash_changes_with_any_file(tmp_path: Path) -> None:
    bundle = tmp_path / "cubic"
    init_bundle(bundle, "python", "cubic")
    first = bundle_digest(bundle)
    (bundle / "data.txt").write_text("more")
    assert bundle_digest(bundle) != first


def test_an_rtmr3_already_extended_is_refused(tmp_path: Path) -> None:
    (tmp_path / RTMR3_FILE).write_bytes(b"\x01" * 48)
    with pytest.raises(AttestationError, match="one task"):
        extend_rtmr3(bytes(48), tmp_path)
    assert (tmp_path / RTMR3_FILE).read_bytes() == b"\x01" * 48


def test_without_the_kernel_interface_the_error_says_what_a_td_needs(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match=r"Linux 6\.16"):
        extend_rtmr3(bytes(48), tmp_path / "missing")
    with pytest.raises(AttestationError, match="48 bytes"):
        extended(bytes(48), b"short")
