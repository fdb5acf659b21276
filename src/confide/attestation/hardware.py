"""Attesters on real hardware, through the file interfaces the platform offers.

- SGX under Gramine: write 64 bytes to ``/dev/attestation/user_report_data``, read the
  DCAP quote from ``/dev/attestation/quote``.
- TDX on Linux: configfs-tsm. Make a report entry under
  ``/sys/kernel/config/tsm/report``, write ``inblob``, read ``outblob``, and check that
  ``generation`` still counts exactly our one write (no one else used the entry).

Both roots are configurable so tests can play the kernel's or Gramine's side.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from confide.attestation.evidence import Evidence
from confide.crypto.binding import REPORT_DATA_BYTES
from confide.errors import AttestationError


def _check(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_BYTES:
        raise AttestationError(f"report data is {REPORT_DATA_BYTES} bytes")


class GramineAttester:
    tee = "sgx"

    def __init__(self, root: Path = Path("/dev/attestation")) -> None:
        self._root = root

    def evidence(self, report_data: bytes) -> Evidence:
        _check(report_data)
        try:
            (self._root / "user_report_data").write_bytes(report_data)
            quote = (self._root / "quote").read_bytes()
        except OSError as exc:
            raise AttestationError(
                f"Gramine attestation interface {self._root} unavailable: {exc.strerror}"
            ) from None
        if not quote:
            raise AttestationError("Gramine returned an empty quote")
        return Evidence("sgx", quote)


def _wait_for(path: Path, timeout: float = 2.0) -> None:
    """configfs makes an entry's attributes with the entry; allow a slower provider."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AttestationError(f"configfs-tsm entry has no {path.name}")
        time.sleep(0.001)


class ConfigfsTsmAttester:
    tee = "tdx"

    def __init__(self, root: Path = Path("/sys/kernel/config/tsm/report")) -> None:
        self._root = root

    def evidence(self, report_data: bytes) -> Evidence:
        _check(report_data)
        entry = self._root / f"confide-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            entry.mkdir()
        except OSError as exc:
            raise AttestationError(
                f"configfs-tsm interface {self._root} unavailable: {exc.strerror}"
            ) from None
        try:
            _wait_for(entry / "inblob")
            (entry / "inblob").write_bytes(report_data)
            quote = (entry / "outblob").read_bytes()
            generation = (entry / "generation").read_text().strip()
        except OSError as exc:
            raise AttestationError(f"configfs-tsm report failed: {exc.strerror}") from None
        finally:
            with contextlib.suppress(OSError):
                entry.rmdir()
        if generation != "1":
            raise AttestationError(
                f"configfs-tsm entry was written {generation} times: another writer raced us"
            )
        if not quote:
            raise AttestationError("configfs-tsm returned an empty quote")
        return Evidence("tdx", quote)
