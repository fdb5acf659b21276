"""Attestation policy: deny by default, every refusal names its reason.

A policy lists the measurements it accepts and what it tolerates. Policies compose by
intersection: what the sms enforces for a release is the session's (or task's) policy
intersected with the release policy of every secret it would hand out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confide.attestation.evidence import Appraisal
from confide.attestation.measurement import TEE_TYPES, Measurement
from confide.errors import AttestationError

TOLERATIONS = frozenset(
    {
        "simulation",
        "debug-mode",
        "hyperthreading",
        "outdated-tcb",
        "sw-hardening-needed",
        "configuration-needed",
    }
)

# Intel's TCB status names, verbatim, and the tolerations each one needs. Anything not
# listed (Revoked, a status a future collateral invents) is never accepted.
TCB_REQUIREMENTS: dict[str, frozenset[str]] = {
    "UpToDate": frozenset(),
    "SWHardeningNeeded": frozenset({"sw-hardening-needed"}),
    "ConfigurationNeeded": frozenset({"configuration-needed"}),
    "ConfigurationAndSWHardeningNeeded": frozenset({"configuration-needed", "sw-hardening-needed"}),
    "OutOfDate": frozenset({"outdated-tcb"}),
    "OutOfDateConfigurationNeeded": frozenset({"outdated-tcb", "configuration-needed"}),
}
SIMULATED = "Simulated"
T = TypeVar("T")


@dataclass(frozen=True)
class SgxPins:
    """Further SGX identity constraints (all that are set must hold)."""

    mr_signer: str | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None


@dataclass(frozen=True)
class TdxPins:
    """Further TDX identity constraints: RTMRs by index, MRCONFIGID, TD attributes."""

    rtmrs: tuple[tuple[int, str], ...] = ()
    mr_config_id: str | None = None
    td_attributes: str | None = None

    def to_mapping(self) -> dict[str, str]:
        """The block :func:`parse_tdx_pins` reads back (lower-case hex; unset fields out)."""
        fields = {f"rtmr{index}": value for index, value in self.rtmrs}
        if self.mr_config_id is not None:
            fields["mr_config_id"] = self.mr_config_id
        if self.td_attributes is not None:
            fields["td_attributes"] = self.td_attributes
        return fields


@dataclass(frozen=True)
class Policy:
    measurements: frozenset[Measurement] | None = None  # None: any (offline checks only)
    tee_types: frozenset[str] | None = None  # None: whatever the measurements allow
    tolerate: frozenset[str] = frozenset()
    ignore_advisories: frozenset[str] = frozenset()
    sgx_pins: tuple[SgxPins, ...] = field(default=())
    tdx_pins: tuple[TdxPins, ...] = field(default=())
    # The PCK certificate says whether the platform runs with SMT (hyperthreading) on;
    # like SCONE, a policy refuses that unless it tolerates "hyperthreading". Only the
    # offline default of ``confide attestation verify`` (TCB UpToDate, no advisory, as
    # documented) leaves it unjudged.
    judge_smt: bool = True

    @classmethod
    def offline_default(cls) -> Policy:
        """``attestation verify`` without ``--policy``: any measurement, TCB UpToDate, no
        advisory. Never used by a service: :func:`verify_attestation` refuses a policy
        that names no measurement."""
        return cls(judge_smt=False)

    def allowed_tees(self) -> frozenset[str]:
        allowed = frozenset(TEE_TYPES)
        if self.measurements is not None:
            allowed &= {m.tee for m in self.measurements}
        if self.tee_types is not None:
            allowed &= self.tee_types
        return allowed

    def intersect(self, other: Policy) -> Policy:
        """A policy that accepts exactly what both accept."""
        return Policy(
            measurements=_meet(self.measurements, other.measurements),
            tee_types=_meet(self.tee_types, other.tee_types),
            tolerate=self.tolerate & other.tolerate,
            ignore_advisories=self.ignore_advisories & other.ignore_advisories,
            sgx_pins=self.sgx_pins + other.sgx_pins,
            tdx_pins=self.tdx_pins + other.tdx_pins,
            judge_smt=self.judge_smt or other.judge_smt,
        )

    def evaluate(self, appraisal: Appraisal) -> list[str]:
        """Every reason this policy refuses the appraisal; empty when it accepts it."""
        reasons: list[str] = []
        if appraisal.tee not in self.allowed_tees():
            reasons.append(f"TEE type {appraisal.tee} not allowed by the policy")
        if self.measurements is not None and appraisal.measurement not in self.measurements:
            reasons.append(f"measurement {appraisal.measurement.short()} not allowed")
        if appraisal.tee == "sim" and "simulation" not in self.tolerate:
            reasons.append("simulation TEE not tolerated (it protects nothing from the host)")
        if appraisal.debug and "debug-mode" not in self.tolerate:
            reasons.append("debug-mode enclave not tolerated")
        if appraisal.tee != "sim":
            reasons += self._tcb_reasons(appraisal)
        reasons += _sgx_pin_reasons(self.sgx_pins, appraisal)
        reasons += _tdx_pin_reasons(self.tdx_pins, appraisal)
        return reasons

    def _tcb_reasons(self, appraisal: Appraisal) -> list[str]:
        reasons: list[str] = []
        needed = TCB_REQUIREMENTS.get(appraisal.tcb_status)
        if needed is None:
            reasons.append(f"TCB status {appraisal.tcb_status} is never accepted")
        elif not needed <= self.tolerate:
            missing = ", ".join(sorted(needed - self.tolerate))
            reasons.append(
                f"TCB status {appraisal.tcb_status} not tolerated (needs tolerate: {missing})"
            )
        for advisory in appraisal.advisories:
            if advisory not in self.ignore_advisories:
                reasons.append(f"advisory {advisory} not ignored")
        if self.judge_smt and appraisal.smt_enabled and "hyperthreading" not in self.tolerate:
            reasons.append("platform runs with hyperthreading (SMT) on: not tolerated")
        return reasons

    def pins_tdx_software(self) -> bool:
        """Whether the policy pins RTMR1 and RTMR2 (the TD's kernel, command line and
        initrd): MRTD alone measures only the TD firmware."""
        pinned = {index for pin in self.tdx_pins for index, _ in pin.rtmrs}
        return {1, 2} <= pinned

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> Policy:
        """Read a policy document (YAML or JSON) with the keys of a session's security
        block plus ``measurements``, ``tee``, ``sgx`` and ``tdx``."""
        known = {"measurements", "tolerate", "ignore_advisories", "tee", "sgx", "tdx"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AttestationError(f"{source}: unknown policy field {unknown[0]!r}")
        measurements = data.get("measurements")
        tolerate = frozenset(_strings(data.get("tolerate", []), f"{source}: tolerate"))
        bad = sorted(tolerate - TOLERATIONS)
        if bad:
            raise AttestationError(
                f"{source}: unknown toleration {bad[0]!r} (known: {', '.join(sorted(TOLERATIONS))})"
            )
        tee = data.get("tee")
        tee_types = None if tee is None else frozenset(_strings(tee, f"{source}: tee"))
        if tee_types is not None and not tee_types <= set(TEE_TYPES):
            raise AttestationError(f"{source}: tee must be among {', '.join(TEE_TYPES)}")
        return cls(
            measurements=None
            if measurements is None
            else frozenset(
                Measurement.parse(m) for m in _strings(measurements, f"{source}: measurements")
            ),
            tee_types=tee_types,
            tolerate=tolerate,
            ignore_advisories=frozenset(
                _strings(data.get("ignore_advisories", []), f"{source}: ignore_advisories")
            ),
            sgx_pins=_sgx_pins(data.get("sgx"), source),
            tdx_pins=parse_tdx_pins(data.get("tdx"), source),
        )


def _meet(a: frozenset[T] | None, b: frozenset[T] | None) -> frozenset[T] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AttestationError(f"{where}: expected a list of strings")
    return list(value)


def _sgx_pins(value: Any, source: str) -> tuple[SgxPins, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not set(value) <= {
        "mr_signer",
        "isv_prod_id",
        "min_isv_svn",
    }:
        raise AttestationError(f"{source}: sgx takes mr_signer, isv_prod_id, min_isv_svn")
    return (
        SgxPins(
            mr_signer=_hex_or_none(value.get("mr_signer"), 64, f"{source}: sgx.mr_signer"),
            isv_prod_id=_int_or_none(value.get("isv_prod_id"), f"{source}: sgx.isv_prod_id"),
            min_isv_svn=_int_or_none(value.get("min_isv_svn"), f"{source}: sgx.min_isv_svn"),
        ),
    )


TDX_PIN_FIELDS = frozenset({"rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_config_id", "td_attributes"})


def parse_tdx_pins(value: Any, source: str) -> tuple[TdxPins, ...]:
    """A ``tdx`` block (``rtmr0`` to ``rtmr3``, ``mr_config_id``, ``td_attributes``, hex) as
    pins: none for None; AttestationError naming ``source`` for anything else."""
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not set(value) <= TDX_PIN_FIELDS:
        raise AttestationError(f"{source}: tdx takes {', '.join(sorted(TDX_PIN_FIELDS))}")
    rtmrs = tuple(
        (index, str(_hex_or_none(value[f"rtmr{index}"], 96, f"{source}: tdx.rtmr{index}")))
        for index in range(4)
        if f"rtmr{index}" in value
    )
    return (
        TdxPins(
            rtmrs=rtmrs,
            mr_config_id=_hex_or_none(value.get("mr_config_id"), 96, f"{source}: tdx.mr_config_id"),
            td_attributes=_hex_or_none(
                value.get("td_attributes"), 16, f"{source}: tdx.td_attributes"
            ),
        ),
    )


_HEX = re.compile(r"[0-9a-fA-F]*")


def _hex_or_none(value: Any, length: int, where: str) -> str | None:
    if value is None:
        return None
    # Hex digits only: bytes.fromhex would skip spaces, and a pin with a space in it
    # could never match the quote's value.
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) != length:
        raise AttestationError(f"{where}: expected {length} hex characters")
    return value.lower()


def _int_or_none(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AttestationError(f"{where}: expected a non-negative integer")
    return value


def _sgx_pin_reasons(pins: Iterable[SgxPins], appraisal: Appraisal) -> list[str]:
    reasons: list[str] = []
    for pin in pins:
        if appraisal.tee != "sgx":
            continue
        if pin.mr_signer is not None and appraisal.mr_signer != pin.mr_signer:
            reasons.append(f"MRSIGNER {appraisal.mr_signer} not allowed")
        if pin.isv_prod_id is not None and appraisal.isv_prod_id != pin.isv_prod_id:
            reasons.append(f"ISV product id {appraisal.isv_prod_id} not allowed")
        if pin.min_isv_svn is not None and (appraisal.isv_svn or 0) < pin.min_isv_svn:
            reasons.append(f"ISV SVN {appraisal.isv_svn} below the minimum {pin.min_isv_svn}")
    return reasons


def _tdx_pin_reasons(pins: Iterable[TdxPins], appraisal: Appraisal) -> list[str]:
    reasons: list[str] = []
    for pin in pins:
        if appraisal.tee != "tdx":
            continue
        for index, expected in pin.rtmrs:
            actual = appraisal.rtmrs[index] if index < len(appraisal.rtmrs) else None
            if actual != expected:
                reasons.append(f"RTMR{index} does not match the policy")
        if pin.mr_config_id is not None and appraisal.mr_config_id != pin.mr_config_id:
            reasons.append("MRCONFIGID does not match the policy")
        if pin.td_attributes is not None and appraisal.td_attributes != pin.td_attributes:
            reasons.append(f"TD attributes {appraisal.td_attributes} not allowed")
    return reasons
