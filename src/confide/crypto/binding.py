"""Binding an enclave's identity to its evidence: the 64 bytes of report data."""

from __future__ import annotations

import hashlib

from confide.crypto.encoding import lp

REPORT_DATA_BYTES = 64
_LABEL = b"confide-attest-v1"


def attestation_report_data(
    *,
    nonce: bytes,
    x25519_public: bytes,
    ed25519_public: bytes,
    sms_id: str,
    subject: str,
    service: str,
    worker: str,
) -> bytes:
    """SHA-512 over every value the sms must tie to this enclave.

    See docs/architecture.md, "Identities" and "Attestation and sealed configuration".

    ``subject`` is the session hash or the task id. Each field is length-prefixed, so no
    two different field lists give the same input.
    """
    fields = (
        _LABEL,
        nonce,
        x25519_public,
        ed25519_public,
        sms_id.encode(),
        subject.encode(),
        service.encode(),
        worker.encode(),
    )
    return hashlib.sha512(b"".join(lp(field) for field in fields)).digest()
