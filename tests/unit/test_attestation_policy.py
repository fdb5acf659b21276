"""Policy: TCB statuses, tolerations, advisories, intersection, and policy documents."""

from __future__ import annotations

import pytest

from confide.attestation import TCB_REQUIREMENTS, Appraisal, Policy
from confide.attestation.measurement import Measurement
from confide.errors import AttestationError

SGX_APP = Measurement("sgx", "33" * 32)


def _appraisal(
    status: str = "UpToDate", advisories: tuple[str, ...] = (), **kw: object
) -> Appraisal:
    values: dict[str, object] = {
        "tee": "sgx",
        "measurement": SGX_APP,
        "report_data": bytes(64),
        "debug": False,
        "tcb_status": status,
        "advisories": advisories,
    }
    values.update(kw)
    return Appraisal(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "needs"),
    [
        ("UpToDate", set()),
        ("SWHardeningNeeded", {"sw-hardening-needed"}),
        ("ConfigurationNeeded", {"configuration-needed"}),
        ("ConfigurationAndSWHardeningNeeded", {"configuration-needed", "sw-hardening-needed"}),
        ("OutOfDate", {"outdated-tcb"}),
        ("OutOfDateConfigurationNeeded", {"outdated-tcb", "configuration-needed"}),
    ],
)
def test_each_status_needs_exactly_its_tolerations(status: str, needs: set[str]) -> None:
    assert TCB_REQUIREMENTS[status] == needs
    assert Policy(tolerate=frozenset(needs)).evaluate(_appraisal(status)) == []
    for missing in needs:
        partial = Policy(tolerate=frozenset(needs - {missing}))
        reasons = partial.evaluate(_appraisal(status))
        assert reasons == [
            f"TCB status {status} not tolerated (needs tolerate: "
            f"{', '.join(sorted(needs - (needs - {missing})))})"
        ]


@pytest.mark.parametrize("status", ["Revoked", "SomethingNew", ""])
def test_revoked_and_unknown_statuses_are_never_accepted(status: str) -> None:
    everything = Policy(
        tolerate=frozenset(
            TCB_REQUIREMENTS["OutOfDateConfigurationNeeded"] | {"sw-hardening-needed", "debug-mode"}
        )
    )
    assert everything.evaluate(_appraisal(status)) == [f"TCB status {status} is never accepted"]


def test_advisories_must_each_be_ignored() -> None:
    appraisal = _appraisal(advisories=("INTEL-SA-00289", "INTEL-SA-00615"))
    policy = Policy(ignore_advisories=frozenset({"INTEL-SA-00289"}))
    assert policy.evaluate(appraisal) == ["advisory INTEL-SA-00615 not ignored"]


def test_intersection_is_the_stricter_of_both() -> None:
    session = Policy(
        measurements=frozenset({SGX_APP, Measurement("sim", "aa" * 32)}),
        tolerate=frozenset({"simulation", "sw-hardening-needed"}),
        ignore_advisories=frozenset({"INTEL-SA-1", "INTEL-SA-2"}),
    )
    secret = Policy(
        tee_types=frozenset({"sgx", "tdx"}),
        tolerate=frozenset({"sw-hardening-needed"}),
        ignore_advisories=frozenset({"INTEL-SA-2"}),
    )
    both = session.intersect(secret)
    assert both.allowed_tees() == {"sgx"}
    assert both.tolerate == {"sw-hardening-needed"}
    assert both.ignore_advisories == {"INTEL-SA-2"}
    assert both.evaluate(_appraisal(advisories=("INTEL-SA-1",))) == [
        "advisory INTEL-SA-1 not ignored"
    ]
    stricter = both.intersect(Policy())  # the default tolerates nothing, ignores nothing
    assert stricter.measurements == both.measurements
    assert stricter.tolerate == stricter.ignore_advisories == frozenset()
    sim = _appraisal(tee="sim", measurement=Measurement("sim", "aa" * 32), tcb_status="Simulated")
    assert "TEE type sim not allowed by the policy" in both.evaluate(sim)
    assert session.evaluate(sim) == []


def test_bare_hex_measurement_shows_the_typed_form() -> None:
    with pytest.raises(AttestationError) as info:
        Measurement.parse("33" * 32)
    message = str(info.value)
    assert "is not typed" in message and "sgx:<64 hex> (MRENCLAVE)" in message
    assert "tdx:<96 hex> (MRTD)" in message


@pytest.mark.parametrize("text", ["sgx:abc", "tdx:" + "ab" * 32, "sim:" + "zz" * 32, "foo:00"])
def test_malformed_measurements(text: str) -> None:
    with pytest.raises(AttestationError, match="measurement"):
        Measurement.parse(text)


def test_measurements_are_normalised() -> None:
    assert str(Measurement.parse("SGX:" + "AB" * 32)) == "sgx:" + "ab" * 32
    assert Measurement.parse("sgx:" + "33d8" + "00" * 28 + "0fbb").short() == "sgx:33d8…fbb"


def test_policy_document() -> None:
    policy = Policy.from_mapping(
        {
            "measurements": ["sgx:" + "33" * 32],
            "tolerate": ["sw-hardening-needed"],
            "ignore_advisories": ["INTEL-SA-00615"],
            "sgx": {"mr_signer": "81" * 32, "min_isv_svn": 2},
            "tdx": {"rtmr1": "00" * 48},
        },
        "p.yml",
    )
    assert policy.measurements == frozenset({SGX_APP})
    assert policy.sgx_pins[0].min_isv_svn == 2
    assert policy.tdx_pins[0].rtmrs == ((1, "00" * 48),)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"measurement": []}, "unknown policy field 'measurement'"),
        ({"tolerate": ["everything"]}, "unknown toleration 'everything'"),
        ({"tolerate": "simulation", "measurements": ["ab" * 32]}, "is not typed"),
        ({"tolerate": [1]}, "expected a list of strings"),
        ({"tee": ["sgx", "amd"]}, "tee must be among"),
        ({"sgx": {"mr_signer": "zz"}}, "sgx.mr_signer: expected 64 hex"),
        # 64 characters that bytes.fromhex would take (it skips spaces): never a match
        ({"sgx": {"mr_signer": "ab " * 20 + "abab"}}, "sgx.mr_signer: expected 64 hex"),
        ({"tdx": {"rtmr1": "ab " * 32}}, "tdx.rtmr1: expected 96 hex"),
        ({"sgx": {"isv_prod_id": -1}}, "non-negative integer"),
        ({"tdx": {"rtmr9": "00"}}, "tdx takes"),
    ],
)
def test_bad_policy_documents(document: dict[str, object], message: str) -> None:
    with pytest.raises(AttestationError, match=message):
        Policy.from_mapping(document, "p.yml")
