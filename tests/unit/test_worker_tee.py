"""Which TEE a worker uses (never sim unless asked), and its sim platform key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from confide.worker.tee import TeeError, choose_tee, detect_tee, platform_key


def test_detect_tee_finds_hardware_and_never_sim(tmp_path: Path) -> None:
    sgx, tdx = (tmp_path / "sgx_enclave",), (tmp_path / "tsm" / "report",)
    assert detect_tee(sgx, tdx) is None
    sgx[0].touch()
    assert detect_tee(sgx, tdx) == "sgx"
    tdx[0].mkdir(parents=True)
    assert detect_tee(sgx, tdx) == "tdx"


def test_choose_tee() -> None:
    assert choose_tee("sim", None) == "sim"
    assert choose_tee("sgx", None) == "sgx"  # asked: the runtime's attester says if it is not
    assert choose_tee(None, "tdx") == "tdx"
    with pytest.raises(TeeError, match=r"no TEE hardware.*pass --tee sim for development"):
        choose_tee(None, None)
    with pytest.raises(TeeError, match="unknown TEE 'foo'"):
        choose_tee("foo", "sgx")


def test_platform_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = platform_key(tmp_path / "w")
    again = platform_key(tmp_path / "w")
    assert first.public_bytes() == again.public_bytes()
    path = tmp_path / "w" / "sim-platform-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "w").stat().st_mode) == 0o700
    path.write_text("not hex\n")
    with pytest.raises(TeeError, match="unreadable or malformed"):
        platform_key(tmp_path / "w")
