"""Attesters on real hardware, through the file interfaces the platform offers.

- SGX under Gramine: :func:`confide.hardware.sgx_quote.generate` (Gramine's
  ``/dev/attestation`` files, attestation type ``dcap`` checked).
- TDX on Linux: :func:`confide.hardware.tdx_quote.generate` (configfs-tsm: the report
  entry's provider is ``tdx_guest`` and it was written exactly once).

Both roots are configurable so tests can play the kernel's or Gramine's side.
"""

from __future__ import annotations

from pathlib import Path

from confide.attestation.evidence import Evidence
from confide.hardware import sgx_quote, tdx_quote


class GramineAttester:
    tee = "sgx"

    def __init__(self, root: Path = sgx_quote.ATTESTATION_DIR) -> None:
        self._root = root

    def evidence(self, report_data: bytes) -> Evidence:
        return Evidence("sgx", sgx_quote.generate(report_data, self._root).quote)


class ConfigfsTsmAttester:
    tee = "tdx"

    def __init__(self, root: Path = tdx_quote.TSM_REPORT_DIR) -> None:
        self._root = root

    def evidence(self, report_data: bytes) -> Evidence:
        return Evidence("tdx", tdx_quote.generate(report_data, self._root).quote)
