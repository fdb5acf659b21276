"""Hardware verification on real SGX and TDX quotes, with the times of PROVENANCE.md."""

from __future__ import annotations

import pytest

from confide.attestation import Evidence, Policy, Verdict, appraise_evidence
from confide.attestation.dcap import CollateralFile, DcapVerifier
from confide.attestation.measurement import Measurement
from confide.attestation.policy import SgxPins, TdxPins
from tests.vectors.dcap_vectors import (
    SGX,
    SGX_MR_ENCLAVE,
    SGX_MR_SIGNER,
    TDX,
    TDX_MR_TD,
    TDX_OUTDATED,
    QuoteVector,
)

DAY = 86400


def _verify(
    vector: QuoteVector,
    policy: Policy,
    now: int | None = None,
    data: bytes | None = None,
    label: str | None = None,
    expected_report_data: bytes | None = None,
) -> Verdict:
    tee = label or vector.tee
    verifiers = {
        "sgx": DcapVerifier("sgx", CollateralFile(vector.collateral)),
        "tdx": DcapVerifier("tdx", CollateralFile(vector.collateral)),
    }
    evidence = Evidence(tee, data if data is not None else vector.quote.read_bytes())
    return appraise_evidence(
        evidence,
        policy=policy,
        verifiers=verifiers,
        now=vector.now if now is None else now,
        expected_report_data=expected_report_data,
    )


SGX_TOLERANT = Policy(
    measurements=frozenset({Measurement("sgx", SGX_MR_ENCLAVE)}),
    tolerate=frozenset({"sw-hardening-needed", "configuration-needed"}),
    ignore_advisories=frozenset({"INTEL-SA-00289", "INTEL-SA-00615"}),
)


def test_sgx_sample_status_advisories_and_identity() -> None:
    verdict = _verify(SGX, Policy())
    assert verdict.appraisal is not None
    appraisal = verdict.appraisal
    assert appraisal.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert appraisal.advisories == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert appraisal.measurement == Measurement("sgx", SGX_MR_ENCLAVE)
    assert appraisal.mr_signer == SGX_MR_SIGNER
    assert appraisal.report_data.startswith(b"Hello, world!")
    assert appraisal.report_data[13:] == bytes(51)
    assert appraisal.debug is False
    # deny by default: the status and both advisories are named
    assert not verdict.ok
    assert verdict.reasons == (
        "TCB status ConfigurationAndSWHardeningNeeded not tolerated "
        "(needs tolerate: configuration-needed, sw-hardening-needed)",
        "advisory INTEL-SA-00289 not ignored",
        "advisory INTEL-SA-00615 not ignored",
    )


def test_sgx_sample_accepted_when_tolerated_is_only_a_warning() -> None:
    verdict = _verify(SGX, SGX_TOLERANT)
    assert verdict.ok
    assert verdict.status == "warning"


def test_sgx_policy_without_configuration_needed_names_the_status() -> None:
    policy = Policy(tolerate=frozenset({"sw-hardening-needed"}))
    verdict = _verify(SGX, policy)
    assert "TCB status ConfigurationAndSWHardeningNeeded not tolerated" in verdict.reasons[0]


def test_sgx_policy_that_does_not_ignore_00615_names_it() -> None:
    policy = Policy(
        tolerate=frozenset({"sw-hardening-needed", "configuration-needed"}),
        ignore_advisories=frozenset({"INTEL-SA-00289"}),
    )
    verdict = _verify(SGX, policy)
    assert verdict.reasons == ("advisory INTEL-SA-00615 not ignored",)


def test_sgx_measurement_and_signer_pins() -> None:
    other = Measurement("sgx", "00" * 32)
    policy = Policy(
        measurements=frozenset({other}),
        tolerate=SGX_TOLERANT.tolerate,
        ignore_advisories=SGX_TOLERANT.ignore_advisories,
        sgx_pins=(SgxPins(mr_signer="11" * 32, isv_prod_id=7, min_isv_svn=1),),
    )
    verdict = _verify(SGX, policy)
    assert verdict.reasons == (
        "measurement sgx:33d8…fbb not allowed",
        f"MRSIGNER {SGX_MR_SIGNER} not allowed",
        "ISV product id 0 not allowed",
        "ISV SVN 0 below the minimum 1",
    )


def test_sgx_report_data_binding() -> None:
    expected = b"Hello, world!".ljust(64, b"\x00")
    assert _verify(SGX, SGX_TOLERANT, expected_report_data=expected).ok
    wrong = _verify(SGX, SGX_TOLERANT, expected_report_data=bytes(64))
    assert any("report data does not match" in r for r in wrong.reasons)


def test_tdx_sample_up_to_date_but_hyperthreading_must_be_tolerated() -> None:
    strict = Policy(measurements=frozenset({Measurement("tdx", TDX_MR_TD)}))
    assert _verify(TDX, strict).reasons == (
        "platform runs with hyperthreading (SMT) on: not tolerated",
    )
    tolerant = Policy(
        measurements=frozenset({Measurement("tdx", TDX_MR_TD)}),
        tolerate=frozenset({"hyperthreading"}),
    )
    verdict = _verify(TDX, tolerant)
    assert verdict.ok, verdict.reasons
    assert verdict.status == "warning"  # a tolerated weakness is never "affirming"
    assert verdict.appraisal is not None
    assert verdict.appraisal.smt_enabled is True
    assert verdict.appraisal.tcb_status == "UpToDate"
    assert verdict.appraisal.advisories == ()
    assert verdict.appraisal.report_data.hex().startswith("9a9d48e7")
    assert verdict.appraisal.report_data.hex().endswith("2b523f20")


def test_tdx_rtmr_and_config_pins() -> None:
    smt = frozenset({"hyperthreading"})
    policy = Policy(
        tolerate=smt, tdx_pins=(TdxPins(rtmrs=((2, "00" * 48),), mr_config_id="11" * 48),)
    )
    verdict = _verify(TDX, policy)
    assert verdict.reasons == (
        "RTMR2 does not match the policy",
        "MRCONFIGID does not match the policy",
    )
    assert verdict.appraisal is not None
    actual = verdict.appraisal.rtmrs[2]
    pinned = Policy(tolerate=smt, tdx_pins=(TdxPins(rtmrs=((2, actual),), mr_config_id="00" * 48),))
    assert _verify(TDX, pinned).ok


def test_outdated_tdx_quote_is_refused() -> None:
    verdict = _verify(TDX_OUTDATED, Policy(tolerate=frozenset({"outdated-tcb"})))
    assert not verdict.ok
    assert verdict.reasons == ("quote verification failed: No matching TCB level found",)


@pytest.mark.parametrize("vector", [SGX, TDX], ids=["sgx", "tdx"])
def test_refused_a_day_after_collateral_expires_and_before_it_is_issued(
    vector: QuoteVector,
) -> None:
    policy = SGX_TOLERANT if vector is SGX else Policy.offline_default()
    assert _verify(vector, policy).ok
    issued, expires = vector.validity()
    late = _verify(vector, policy, now=expires + DAY)
    assert not late.ok
    assert "expired" in late.reasons[0]
    early = _verify(vector, policy, now=issued - DAY)
    assert not early.ok
    assert late.appraisal is None and early.appraisal is None


def test_outdated_quote_refused_after_its_collateral_expires() -> None:
    _, expires = TDX_OUTDATED.validity()
    verdict = _verify(TDX_OUTDATED, Policy(), now=expires + DAY)
    assert not verdict.ok


# Offsets of the regions of a quote: header (48 bytes), body (SGX report 384 bytes, TD
# report 584), then the signature data: 4-byte length, ECDSA signature (64), attestation
# key (64), QE report (384), QE report signature (64), auth data, certification data.
SGX_BODY, TDX_BODY = 48, 48
SGX_SIG, TDX_SIG = 48 + 384 + 4, 48 + 584 + 4


@pytest.mark.parametrize(
    ("vector", "offset", "region"),
    [
        (SGX, 2, "header: attestation key type"),
        (SGX, 8, "header: QE SVN"),
        (SGX, 30, "header: user data"),
        (SGX, SGX_BODY + 64, "body: MRENCLAVE"),
        (SGX, SGX_BODY + 320, "body: report data"),
        (SGX, SGX_SIG + 10, "signature"),
        (SGX, SGX_SIG + 64 + 10, "attestation key"),
        (SGX, SGX_SIG + 128 + 100, "QE report"),
        (SGX, 1052 + 400, "certification data: PCK certificate"),
        (SGX, 2691 + 300, "certification data: intermediate CA"),
        (SGX, -200, "certification data: root CA copy"),
        (TDX, 30, "header: user data"),
        (TDX, TDX_BODY + 200, "body: MRTD"),
        (TDX, TDX_BODY + 520, "body: report data"),
        (TDX, TDX_SIG + 10, "signature"),
        (TDX, 1258 + 400, "certification data: PCK certificate"),
        (TDX, -200, "certification data: root CA copy"),
    ],
)
def test_a_flipped_byte_anywhere_is_refused(vector: QuoteVector, offset: int, region: str) -> None:
    policy = SGX_TOLERANT if vector is SGX else Policy.offline_default()
    data = bytearray(vector.quote.read_bytes())
    data[offset] ^= 0x01
    verdict = _verify(vector, policy, data=bytes(data))
    assert not verdict.ok, region
    assert verdict.appraisal is None, region  # refused by verification, not by policy


def test_backend_is_chosen_by_policy_not_by_the_evidence_label() -> None:
    tdx_only = Policy(measurements=frozenset({Measurement("tdx", TDX_MR_TD)}))
    honest = _verify(SGX, tdx_only)  # labelled sgx: the policy accepts no sgx
    assert honest.reasons == ("sgx evidence not accepted by the policy (accepts: tdx)",)
    lying = _verify(SGX, tdx_only, label="tdx")  # an SGX quote that claims to be TDX
    assert lying.reasons == ("evidence is a SGX quote, not TDX",)
