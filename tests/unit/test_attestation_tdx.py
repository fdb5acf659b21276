"""TDX evidence: every TD report version read, the debug bit, and the RTMR pins a policy
needs before a TD is trusted."""

from __future__ import annotations

import pytest

from confide.attestation import (
    Appraisal,
    EnclaveBinding,
    Evidence,
    MemoryNonceStore,
    Policy,
    verify_attestation,
)
from confide.attestation.dcap import appraisal_from_claims
from confide.attestation.measurement import Measurement
from confide.attestation.policy import TdxPins
from confide.errors import AttestationError

NOW = 1_800_000_000
MR_TD = Measurement("tdx", "91" * 48)


class StubTdxVerifier:
    """A unit-test stand-in that 'verifies' any evidence as the given TD appraisal."""

    tee = "tdx"

    def __init__(self, report_data: bytes) -> None:
        self.report_data = report_data

    def appraise(self, evidence: Evidence, now: int) -> Appraisal:
        del evidence, now
        return Appraisal(
            tee="tdx",
            measurement=MR_TD,
            report_data=self.report_data,
            debug=False,
            tcb_status="UpToDate",
            rtmrs=("00" * 48, "11" * 48, "22" * 48, "33" * 48),
        )


def _attest_tdx(policy: Policy) -> tuple[bool, tuple[str, ...]]:
    nonces = MemoryNonceStore()
    nonce = nonces.issue(NOW)
    binding = EnclaveBinding(bytes(32), bytes(32), "sms", "session", "app", "0xw")
    verdict = verify_attestation(
        Evidence("tdx", b"quote"),
        nonce=nonce,
        binding=binding,
        policy=policy,
        verifiers={"tdx": StubTdxVerifier(binding.report_data(nonce))},
        nonces=nonces,
        now=NOW,
    )
    return verdict.ok, verdict.reasons


def test_tdx_service_policy_must_pin_rtmr1_and_rtmr2() -> None:
    mrtd_only = Policy(measurements=frozenset({MR_TD}))
    ok, reasons = _attest_tdx(mrtd_only)
    assert not ok
    assert reasons[0].startswith("a TDX policy must pin RTMR1 and RTMR2")
    pinned = Policy(
        measurements=frozenset({MR_TD}),
        tdx_pins=(TdxPins(rtmrs=((1, "11" * 48), (2, "22" * 48))),),
    )
    assert _attest_tdx(pinned) == (True, ())
    wrong = Policy(
        measurements=frozenset({MR_TD}),
        tdx_pins=(TdxPins(rtmrs=((1, "11" * 48), (2, "ff" * 48))),),
    )
    assert _attest_tdx(wrong) == (False, ("RTMR2 does not match the policy",))


def _td_fields(**changes: str) -> dict[str, str]:
    fields = {
        "mr_td": "91" * 48,
        "report_data": "00" * 64,
        "td_attributes": "0000001000000000",
        "mr_config_id": "00" * 48,
        **{f"rt_mr{i}": f"{i}{i}" * 48 for i in range(4)},
    }
    fields.update(changes)
    return fields


CLAIMS_TCB = {"tcb": {"status": "UpToDate", "advisory_ids": []}, "platform": {"pck": {}}}


@pytest.mark.parametrize(
    "report",
    [
        {"TD10": _td_fields()},
        {"TD15": {"base": _td_fields(), "tee_tcb_svn2": "00" * 16, "mr_service_td": "00" * 48}},
        {"TD15Ex": {"base": {"base": _td_fields(), "tee_tcb_svn2": "00"}, "vmid": 1}},
    ],
    ids=["TD10", "TD15", "TD15Ex"],
)
def test_td_report_versions_are_all_read(report: dict[str, object]) -> None:
    appraisal = appraisal_from_claims("tdx", {**CLAIMS_TCB, "report": report})
    assert appraisal.measurement == MR_TD
    assert appraisal.rtmrs[3] == "33" * 48
    assert appraisal.debug is False


@pytest.mark.parametrize("attributes", ["0100000000000000", "8000000000000000"])
def test_any_td_under_debug_bit_marks_debug(attributes: str) -> None:
    report = {"TD10": _td_fields(td_attributes=attributes)}
    assert appraisal_from_claims("tdx", {**CLAIMS_TCB, "report": report}).debug is True


def test_incomplete_claims_are_an_attestation_error() -> None:
    with pytest.raises(AttestationError, match="incomplete"):
        appraisal_from_claims("tdx", {**CLAIMS_TCB, "report": {"TD10": {"mr_td": "91" * 48}}})
