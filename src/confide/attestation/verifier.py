"""Verification: evidence + expected binding + policy + time -> a verdict with reasons.

The backend that reads the evidence is chosen among those the *policy* allows, never by
what the evidence says about itself; the evidence's label only selects among them, and a
label that lies makes the chosen backend fail to parse the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from confide.attestation.evidence import Appraisal, Evidence
from confide.attestation.nonces import NonceStore
from confide.attestation.policy import Policy
from confide.crypto import constant_time_equal
from confide.crypto.binding import attestation_report_data
from confide.errors import AttestationError

AFFIRMING = "affirming"
WARNING = "warning"
CONTRAINDICATED = "contraindicated"


class Verifier(Protocol):
    tee: str

    def appraise(self, evidence: Evidence, now: int) -> Appraisal:
        """Verify the evidence cryptographically; raise AttestationError if it does not."""
        ...


class Attester(Protocol):
    tee: str

    def evidence(self, report_data: bytes) -> Evidence: ...


@dataclass(frozen=True)
class EnclaveBinding:
    """Everything the evidence must be bound to (docs/architecture.md, "Identities")."""

    x25519_public: bytes
    ed25519_public: bytes
    sms_id: str
    subject: str  # session hash or task id
    service: str
    worker: str

    def report_data(self, nonce: bytes) -> bytes:
        return attestation_report_data(
            nonce=nonce,
            x25519_public=self.x25519_public,
            ed25519_public=self.ed25519_public,
            sms_id=self.sms_id,
            subject=self.subject,
            service=self.service,
            worker=self.worker,
        )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    status: str  # affirming | warning | contraindicated
    appraisal: Appraisal | None
    reasons: tuple[str, ...]


def refused(*reasons: str, appraisal: Appraisal | None = None) -> Verdict:
    return Verdict(False, CONTRAINDICATED, appraisal, tuple(reasons))


def appraise_evidence(
    evidence: Evidence,
    *,
    policy: Policy,
    verifiers: Mapping[str, Verifier],
    now: int,
    expected_report_data: bytes | None,
) -> Verdict:
    """Verify ``evidence`` and judge it by ``policy``; never raises for bad evidence."""
    verifier = _backend(evidence, policy, verifiers)
    if isinstance(verifier, str):
        return refused(verifier)
    try:
        appraisal = verifier.appraise(evidence, now)
    except AttestationError as exc:
        return refused(str(exc))
    except Exception as exc:  # a backend's parser on hostile bytes: refuse, never crash
        return refused(f"evidence could not be verified ({type(exc).__name__})")
    reasons: list[str] = []
    if appraisal.tee != verifier.tee or appraisal.measurement.tee != verifier.tee:
        reasons.append("evidence type does not match its verifier")
    if expected_report_data is not None and not constant_time_equal(
        appraisal.report_data, expected_report_data
    ):
        reasons.append(
            "report data does not match: evidence is bound to other keys, nonce, "
            "session, service or worker"
        )
    reasons += policy.evaluate(appraisal)
    if reasons:
        return refused(*reasons, appraisal=appraisal)
    return Verdict(True, _status(appraisal), appraisal, ())


def _backend(
    evidence: Evidence, policy: Policy, verifiers: Mapping[str, Verifier]
) -> Verifier | str:
    """The verifier for ``evidence`` among those the policy allows, or why there is none."""
    allowed = policy.allowed_tees()
    if evidence.tee not in allowed:
        accepts = ", ".join(sorted(allowed)) or "nothing"
        return f"{evidence.tee} evidence not accepted by the policy (accepts: {accepts})"
    verifier = verifiers.get(evidence.tee)
    if verifier is None:
        if evidence.tee == "sim":
            return "simulation evidence refused: simulation is not allowed here"
        return f"no {evidence.tee} verifier is configured"
    return verifier


def _status(appraisal: Appraisal) -> str:
    """Simulation, debug, SMT and any tolerated TCB issue are never better than
    ``warning``."""
    clean = (
        appraisal.tee != "sim"
        and appraisal.tcb_status == "UpToDate"
        and not appraisal.advisories
        and not appraisal.debug
        and not appraisal.smt_enabled
    )
    return AFFIRMING if clean else WARNING


def verify_attestation(
    evidence: Evidence,
    *,
    nonce: bytes,
    binding: EnclaveBinding,
    policy: Policy,
    verifiers: Mapping[str, Verifier],
    nonces: NonceStore,
    now: int,
) -> Verdict:
    """The full check the sms makes: a fresh nonce, bound into the evidence, then policy.

    Stricter than :func:`appraise_evidence` in two ways a service needs: the policy must
    name the measurements it accepts, and a TDX policy must pin RTMR1 and RTMR2.
    """
    try:
        nonces.consume(nonce, now)
    except AttestationError as exc:
        return refused(str(exc))
    if policy.measurements is None:
        return refused("the policy names no measurement: nothing is accepted (deny by default)")
    if evidence.tee == "tdx" and not policy.pins_tdx_software():
        return refused(
            "a TDX policy must pin RTMR1 and RTMR2: MRTD measures only the TD firmware, "
            "not the kernel and initrd that run"
        )
    return appraise_evidence(
        evidence,
        policy=policy,
        verifiers=verifiers,
        now=now,
        expected_report_data=binding.report_data(nonce),
    )
