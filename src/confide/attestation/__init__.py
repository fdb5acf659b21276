"""Attestation: evidence, verification, policy and attestation result tokens.

Usable without HTTP: the sms (and the offline ``confide attestation verify``) call
:func:`verify_attestation` / :func:`appraise_evidence` with a policy, the verifiers it
allows, a nonce store and the time.
"""

from confide.attestation.evidence import Appraisal, Evidence
from confide.attestation.measurement import Measurement
from confide.attestation.nonces import MemoryNonceStore, NonceStore
from confide.attestation.policy import TCB_REQUIREMENTS, TOLERATIONS, Policy
from confide.attestation.token import TokenCheck, TokenIssuer, verify_token
from confide.attestation.verifier import (
    AFFIRMING,
    CONTRAINDICATED,
    WARNING,
    Attester,
    EnclaveBinding,
    Verdict,
    Verifier,
    appraise_evidence,
    verify_attestation,
)

__all__ = [
    "AFFIRMING",
    "CONTRAINDICATED",
    "TCB_REQUIREMENTS",
    "TOLERATIONS",
    "WARNING",
    "Appraisal",
    "Attester",
    "EnclaveBinding",
    "Evidence",
    "Measurement",
    "MemoryNonceStore",
    "NonceStore",
    "Policy",
    "TokenCheck",
    "TokenIssuer",
    "Verdict",
    "Verifier",
    "appraise_evidence",
    "verify_attestation",
    "verify_token",
]
