"""The sim backend through the full sms-side check: nonce, binding, policy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from confide.attestation import (
    EnclaveBinding,
    Evidence,
    MemoryNonceStore,
    Policy,
    Verdict,
    verify_attestation,
)
from confide.attestation.measurement import Measurement
from confide.attestation.sim import MemoryPlatformRegistry, SimAttester, SimVerifier
from confide.crypto.signing import SigningKey

NOW = 1_800_000_000
APP = Measurement("sim", "ab" * 32)
SIM_POLICY = Policy(measurements=frozenset({APP}), tolerate=frozenset({"simulation"}))


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _binding(**changes: bytes | str) -> EnclaveBinding:
    values = {
        "x25519_public": bytes(range(32)),
        "ed25519_public": bytes(range(32, 64)),
        "sms_id": "sms-1",
        "subject": "session-hash",
        "service": "app",
        "worker": "0xworker",
    }
    values.update(changes)
    return EnclaveBinding(**values)  # type: ignore[arg-type]


class World:
    """A platform registered with the verifier, a nonce store, and a clock."""

    def __init__(self) -> None:
        self.platform = SigningKey.generate()
        self.registry = MemoryPlatformRegistry({self.platform.public_bytes()})
        self.nonces = MemoryNonceStore()
        self.verifiers = {"sim": SimVerifier(self.registry)}

    def honest_statement(self) -> tuple[bytes, dict[str, Any]]:
        """A fresh nonce and the parsed evidence an honest attester makes for it."""
        nonce = self.nonces.issue(NOW)
        evidence = SimAttester(self.platform, APP).evidence(_binding().report_data(nonce))
        return nonce, json.loads(evidence.data)

    def submit(self, data: bytes, nonce: bytes) -> Verdict:
        """Verify raw evidence bytes under the standard binding and policy."""
        return verify_attestation(
            Evidence("sim", data),
            nonce=nonce,
            binding=_binding(),
            policy=SIM_POLICY,
            verifiers=self.verifiers,
            nonces=self.nonces,
            now=NOW,
        )

    def attest(
        self,
        *,
        measurement: Measurement = APP,
        debug: bool = False,
        evidence_binding: EnclaveBinding | None = None,
        checked_binding: EnclaveBinding | None = None,
        policy: Policy = SIM_POLICY,
        tamper: bool = False,
        now: int = NOW,
        nonce: bytes | None = None,
    ) -> Verdict:
        nonce = nonce if nonce is not None else self.nonces.issue(NOW)
        attester = SimAttester(self.platform, measurement, debug=debug)
        evidence = attester.evidence((evidence_binding or _binding()).report_data(nonce))
        if tamper:
            document = json.loads(evidence.data)
            document["statement"]["debug"] = not document["statement"]["debug"]
            evidence = Evidence("sim", _canonical(document))
        return verify_attestation(
            evidence,
            nonce=nonce,
            binding=checked_binding or _binding(),
            policy=policy,
            verifiers=self.verifiers,
            nonces=self.nonces,
            now=now,
        )


@pytest.fixture
def world() -> World:
    return World()


def test_sim_round_trip_is_at_best_a_warning(world: World) -> None:
    verdict = world.attest()
    assert verdict.ok, verdict.reasons
    assert verdict.status == "warning"
    assert verdict.appraisal is not None
    assert verdict.appraisal.platform == world.platform.public_bytes().hex()


def test_wrong_measurement(world: World) -> None:
    other = Measurement("sim", "cd" * 32)
    assert world.attest(measurement=other).reasons == (f"measurement {other.short()} not allowed",)


@pytest.mark.parametrize(
    "field", ["x25519_public", "ed25519_public", "sms_id", "subject", "service", "worker"]
)
def test_evidence_bound_to_anything_else_is_refused(world: World, field: str) -> None:
    value: bytes | str = b"\x01" * 32 if field.endswith("public") else "other"
    changed = _binding(**{field: value})
    verdict = world.attest(evidence_binding=changed)
    assert not verdict.ok
    assert verdict.reasons[0].startswith("report data does not match")


def test_unknown_platform_key(world: World) -> None:
    world.verifiers = {"sim": SimVerifier(MemoryPlatformRegistry())}
    verdict = world.attest()
    assert not verdict.ok
    assert "is not registered" in verdict.reasons[0]


def test_replayed_nonce(world: World) -> None:
    nonce = world.nonces.issue(NOW)
    assert world.attest(nonce=nonce).ok
    replay = world.attest(nonce=nonce)
    assert replay.reasons == ("nonce unknown or already used (replayed evidence?)",)


def test_unknown_nonce(world: World) -> None:
    assert world.attest(nonce=b"\x00" * 32).reasons[0].startswith("nonce unknown")


def test_expired_nonce(world: World) -> None:
    verdict = world.attest(now=NOW + 61)
    assert verdict.reasons == ("nonce expired: ask for a new challenge",)


def test_tampered_statement(world: World) -> None:
    assert world.attest(tamper=True).reasons == ("sim evidence signature does not verify",)


def test_forged_signature(world: World) -> None:
    nonce, document = world.honest_statement()
    document["signature"] = "00" * 64
    verdict = world.submit(_canonical(document), nonce)
    assert verdict.reasons == ("sim evidence signature does not verify",)


def test_debug_needs_debug_mode(world: World) -> None:
    assert world.attest(debug=True).reasons == ("debug-mode enclave not tolerated",)
    tolerant = Policy(
        measurements=frozenset({APP}), tolerate=frozenset({"simulation", "debug-mode"})
    )
    assert world.attest(debug=True, policy=tolerant).ok


def test_simulation_must_be_tolerated(world: World) -> None:
    strict = Policy(measurements=frozenset({APP}))
    verdict = world.attest(policy=strict)
    assert verdict.reasons == ("simulation TEE not tolerated (it protects nothing from the host)",)


def test_sim_not_allowed_on_this_verifier(world: World) -> None:
    world.verifiers = {}
    verdict = world.attest()
    assert verdict.reasons == ("simulation evidence refused: simulation is not allowed here",)


def test_hardware_only_policy_refuses_sim_evidence(world: World) -> None:
    hardware = Policy(measurements=frozenset({Measurement("sgx", "ab" * 32)}))
    verdict = world.attest(policy=hardware)
    assert verdict.reasons == ("sim evidence not accepted by the policy (accepts: sgx)",)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{}",
        b'{"statement": {}, "signature": "00"}',
        b"x" * 20000,
        b"[" * 8000,  # nesting deep enough to overflow a recursive parser
    ],
)
def test_malformed_sim_evidence(world: World, data: bytes) -> None:
    verdict = world.submit(data, world.nonces.issue(NOW))
    assert not verdict.ok
    assert "sim evidence is" in verdict.reasons[0]


def test_sim_attester_cannot_claim_a_hardware_measurement() -> None:
    from confide.errors import AttestationError

    with pytest.raises(AttestationError, match="cannot claim"):
        SimAttester(SigningKey.generate(), Measurement("sgx", "ab" * 32))


@pytest.mark.parametrize(
    "recode",
    [
        lambda d: json.dumps(d).encode(),  # spaces
        lambda d: b"\xef\xbb\xbf" + _canonical(d),  # a BOM
        lambda d: _canonical(d).replace(b'"debug":false', b'"debug":true,"debug":false'),
        lambda d: _canonical({**d, "signature": d["signature"].upper()}),
    ],
    ids=["spaces", "bom", "duplicate key", "upper-case hex"],
)
def test_only_the_canonical_encoding_is_accepted(world: World, recode: object) -> None:
    """One statement, one byte string: no parser differential can hide in the encoding."""
    nonce, document = world.honest_statement()
    verdict = world.submit(recode(document), nonce)  # type: ignore[operator]
    assert verdict.reasons == ("sim evidence is malformed",)


def test_a_service_policy_must_name_measurements(world: World) -> None:
    """No measurement list means "any" only offline; the sms path refuses it."""
    verdict = world.attest(policy=Policy(tolerate=frozenset({"simulation"})))
    assert verdict.reasons == (
        "the policy names no measurement: nothing is accepted (deny by default)",
    )


def test_nonce_store_limits_and_types() -> None:
    from confide.errors import AttestationError

    store = MemoryNonceStore(ttl=60, limit=3)
    nonces = [store.issue(NOW) for _ in range(3)]
    with pytest.raises(AttestationError, match="too many outstanding"):
        store.issue(NOW)
    assert len(store.issue(NOW + 61)) == 32  # the old ones expired and were pruned
    with pytest.raises(AttestationError, match="32 bytes"):
        store.consume("not bytes", NOW)  # type: ignore[arg-type]
    with pytest.raises(AttestationError, match="unknown or already used"):
        store.consume(nonces[0], NOW + 61)
