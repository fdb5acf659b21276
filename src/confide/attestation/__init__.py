"""Attestation: evidence, verification, policy and attestation result tokens.

Usable without HTTP: the sms (and the offline ``confide attestation verify``) call
:func:`verify_attestation` / :func:`appraise_evidence` with a policy, the verifiers it
allows, a nonce store and the time.

Names are loaded on first use (PEP 562), so importing one submodule (a measurement, say)
does not pay for the JOSE and DCAP libraries: every CLI command starts faster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers
    from confide.attestation.evidence import (
        Appraisal as Appraisal,
    )
    from confide.attestation.evidence import (
        Evidence as Evidence,
    )
    from confide.attestation.measurement import (
        Measurement as Measurement,
    )
    from confide.attestation.nonces import (
        MemoryNonceStore as MemoryNonceStore,
    )
    from confide.attestation.nonces import (
        NonceStore as NonceStore,
    )
    from confide.attestation.policy import (
        TCB_REQUIREMENTS as TCB_REQUIREMENTS,
    )
    from confide.attestation.policy import (
        TOLERATIONS as TOLERATIONS,
    )
    from confide.attestation.policy import (
        Policy as Policy,
    )
    from confide.attestation.token import (
        TokenCheck as TokenCheck,
    )
    from confide.attestation.token import (
        TokenIssuer as TokenIssuer,
    )
    from confide.attestation.token import (
        verify_token as verify_token,
    )
    from confide.attestation.verifier import (
        AFFIRMING as AFFIRMING,
    )
    from confide.attestation.verifier import (
        CONTRAINDICATED as CONTRAINDICATED,
    )
    from confide.attestation.verifier import (
        WARNING as WARNING,
    )
    from confide.attestation.verifier import (
        Attester as Attester,
    )
    from confide.attestation.verifier import (
        EnclaveBinding as EnclaveBinding,
    )
    from confide.attestation.verifier import (
        Verdict as Verdict,
    )
    from confide.attestation.verifier import (
        Verifier as Verifier,
    )
    from confide.attestation.verifier import (
        appraise_evidence as appraise_evidence,
    )
    from confide.attestation.verifier import (
        verify_attestation as verify_attestation,
    )

_HOME = {
    "Appraisal": "evidence",
    "Evidence": "evidence",
    "Measurement": "measurement",
    "MemoryNonceStore": "nonces",
    "NonceStore": "nonces",
    "TCB_REQUIREMENTS": "policy",
    "TOLERATIONS": "policy",
    "Policy": "policy",
    "TokenCheck": "token",
    "TokenIssuer": "token",
    "verify_token": "token",
    "AFFIRMING": "verifier",
    "CONTRAINDICATED": "verifier",
    "WARNING": "verifier",
    "Attester": "verifier",
    "EnclaveBinding": "verifier",
    "Verdict": "verifier",
    "Verifier": "verifier",
    "appraise_evidence": "verifier",
    "verify_attestation": "verifier",
}
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


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'confide.attestation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"confide.attestation.{module}"), name)
