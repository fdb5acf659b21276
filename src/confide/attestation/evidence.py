"""What an attester produces and what a verifier concludes from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from confide.attestation.measurement import Measurement


@dataclass(frozen=True)
class Evidence:
    """Raw evidence: a DCAP quote (``sgx``, ``tdx``) or a signed statement (``sim``).

    ``tee`` is only a label: the verifier that reads the evidence is chosen by the
    policy, and a label that disagrees with what the bytes are makes verification fail.
    """

    tee: str
    data: bytes


@dataclass(frozen=True)
class Appraisal:
    """What a backend proved about evidence, before any policy is applied."""

    tee: str
    measurement: Measurement
    report_data: bytes
    debug: bool
    tcb_status: str  # Intel's TCB status name; "Simulated" for sim
    advisories: tuple[str, ...] = ()
    smt_enabled: bool | None = None  # None: the platform does not say
    mr_signer: str | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    rtmrs: tuple[str, ...] = ()
    mr_config_id: str | None = None
    td_attributes: str | None = None
    platform: str | None = None  # sim: the platform key that signed the statement
    details: dict[str, str] = field(default_factory=dict, compare=False)
