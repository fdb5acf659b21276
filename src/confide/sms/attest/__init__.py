"""Attestation and configuration delivery (see :mod:`confide.sms.attest.service`)."""

from confide.sms.attest.service import (
    CONFIG_FORMAT,
    MAX_EVIDENCE_BYTES,
    AttestationRefusedError,
    Attestations,
    AttestRequest,
    AttestRequestError,
    Grant,
    Outcome,
    PendingGrant,
    SessionTarget,
    TaskTarget,
    current_tags,
    hex_field,
)

__all__ = [
    "CONFIG_FORMAT",
    "MAX_EVIDENCE_BYTES",
    "AttestRequest",
    "AttestRequestError",
    "AttestationRefusedError",
    "Attestations",
    "Grant",
    "Outcome",
    "PendingGrant",
    "SessionTarget",
    "TaskTarget",
    "current_tags",
    "hex_field",
]
