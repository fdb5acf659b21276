"""An SGX quote from inside a Gramine enclave (``sgx.remote_attestation = "dcap"``).

Gramine's pseudo-files: ``/dev/attestation/attestation_type`` says which attestation the
manifest enabled (``dcap``), writing 64 bytes to ``user_report_data`` sets the report
data, and reading ``quote`` returns the DCAP quote (v3) binding it, made by the quoting
enclave through the host's AESM. :class:`confide.attestation.hardware.GramineAttester`, the
attester the enclave runtime uses, is this function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from confide.crypto.binding import REPORT_DATA_BYTES
from confide.errors import AttestationError

ATTESTATION_DIR = Path("/dev/attestation")


@dataclass(frozen=True)
class GramineQuote:
    quote: bytes
    attestation_type: str


def generate(report_data: bytes, attestation_dir: Path = ATTESTATION_DIR) -> GramineQuote:
    """A DCAP quote binding ``report_data`` (64 bytes), through Gramine's files."""
    if len(report_data) != REPORT_DATA_BYTES:
        raise AttestationError(f"report data is {REPORT_DATA_BYTES} bytes, not {len(report_data)}")
    try:
        kind = (attestation_dir / "attestation_type").read_text().strip()
    except OSError as exc:
        raise AttestationError(
            f"Gramine's attestation interface is not available at {attestation_dir} "
            f'({exc.strerror}): run inside gramine-sgx with sgx.remote_attestation = "dcap"'
        ) from None
    if kind != "dcap":
        raise AttestationError(
            f"Gramine attestation type is {kind!r}, not 'dcap': the manifest must set "
            f'sgx.remote_attestation = "dcap"'
        )
    try:
        (attestation_dir / "user_report_data").write_bytes(report_data)
        quote = (attestation_dir / "quote").read_bytes()
    except OSError as exc:
        raise AttestationError(f"Gramine quote failed: {exc.strerror}") from None
    if not quote:
        raise AttestationError("Gramine returned an empty quote")
    return GramineQuote(quote, kind)
