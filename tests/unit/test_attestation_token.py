"""Attestation result tokens: issued after a verdict, checked offline by clients."""

from __future__ import annotations

import base64
import json

import pytest

from confide.attestation import (
    Appraisal,
    EnclaveBinding,
    TokenCheck,
    TokenIssuer,
    Verdict,
    verify_token,
)
from confide.attestation.measurement import Measurement
from confide.attestation.token import PROFILE
from confide.crypto.signing import SigningKey
from confide.crypto.tokens import public_jwk, sign_token
from confide.errors import AttestationError

NOW = 1_800_000_000
BINDING = EnclaveBinding(bytes(32), bytes(range(32)), "sms-1", "task-9", "app", "0xw")


def _verdict(
    status: str = "affirming", tee: str = "tdx", tcb: str = "UpToDate", debug: bool = False
) -> Verdict:
    appraisal = Appraisal(
        tee=tee,
        measurement=Measurement(tee, "ab" * (48 if tee == "tdx" else 32)),
        report_data=bytes(64),
        debug=debug,
        tcb_status=tcb if tee != "sim" else "Simulated",
    )
    return Verdict(True, status, appraisal, ())


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer("sms-1", SigningKey.generate())


def _check(**changes: object) -> TokenCheck:
    values: dict[str, object] = {"issuer": "sms-1", "audience": "deploy-1/sms", "now": NOW + 10}
    values.update(changes)
    return TokenCheck(**values)  # type: ignore[arg-type]


def _issue(issuer: TokenIssuer, verdict: Verdict | None = None) -> str:
    return issuer.issue(
        verdict or _verdict(), BINDING, audience="deploy-1/sms", config_hash="cafe", now=NOW
    )


def test_token_carries_the_ear_claims(issuer: TokenIssuer) -> None:
    claims = verify_token(_issue(issuer), issuer.jwks(), _check())
    assert claims["status"] == "affirming"
    assert claims["tee"] == "tdx"
    assert claims["measurement"].startswith("tdx:")
    assert claims["enclave_keys"] == {"x25519": "00" * 32, "ed25519": bytes(range(32)).hex()}
    assert (claims["subject"], claims["service"], claims["worker"]) == ("task-9", "app", "0xw")
    assert claims["config_hash"] == "cafe"
    assert claims["exp"] > claims["iat"] == NOW
    assert len(claims["jti"]) == 32
    assert issuer.jwks()["keys"][0]["kty"] == "OKP"


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (_check(issuer="sms-2"), "issuer"),
        (_check(audience="deploy-2/sms"), "audience"),
        (_check(now=NOW + 3600), "expired"),
        (_check(now=NOW - 1000), "issued in the future"),
    ],
)
def test_claim_checks(issuer: TokenIssuer, check: TokenCheck, message: str) -> None:
    with pytest.raises(AttestationError, match=message):
        verify_token(_issue(issuer), issuer.jwks(), check)


def test_each_weakness_must_be_allowed_on_its_own(issuer: TokenIssuer) -> None:
    sim = _issue(issuer, _verdict("warning", "sim"))
    with pytest.raises(AttestationError, match="simulated TEE"):
        verify_token(sim, issuer.jwks(), _check())
    assert verify_token(sim, issuer.jwks(), _check(allow_sim=True))["tee"] == "sim"
    hardened = _issue(issuer, _verdict("warning", "sgx", tcb="SWHardeningNeeded"))
    with pytest.raises(AttestationError, match="TCB status 'SWHardeningNeeded'"):
        verify_token(hardened, issuer.jwks(), _check(allow_sim=True))
    statuses = frozenset({"UpToDate", "SWHardeningNeeded"})
    assert verify_token(hardened, issuer.jwks(), _check(tcb_statuses=statuses))
    with pytest.raises(AttestationError, match="simulated TEE"):
        verify_token(sim, issuer.jwks(), _check(tcb_statuses=statuses))
    debug = _issue(issuer, _verdict("warning", "tdx", debug=True))
    with pytest.raises(AttestationError, match="debug enclave"):
        verify_token(debug, issuer.jwks(), _check())
    assert verify_token(debug, issuer.jwks(), _check(allow_debug=True))


def test_expected_claims(issuer: TokenIssuer) -> None:
    token = _issue(issuer)
    assert verify_token(token, issuer.jwks(), _check(expect=(("subject", "task-9"),)))
    with pytest.raises(AttestationError, match="token subject 'task-9' is not 'task-8'"):
        verify_token(token, issuer.jwks(), _check(expect=(("subject", "task-8"),)))


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": True}, "no valid iat/exp"),
        ({"iat": "1"}, "no valid iat/exp"),
        ({"exp": NOW + 10 * 86400}, "lives longer"),
        ({"nbf": NOW + 100}, "not valid yet"),
    ],
)
def test_time_claims(claims: dict[str, object], message: str) -> None:
    key = SigningKey.generate()
    base = {
        "eat_profile": PROFILE,
        "iss": "sms-1",
        "aud": "deploy-1/sms",
        "iat": NOW,
        "exp": NOW + 60,
        "status": "affirming",
        "tee": "tdx",
        "debug": False,
        "tcb_status": "UpToDate",
        "advisories": [],
    }
    token = sign_token(key, {**base, **claims})
    jwks = {"keys": [public_jwk(key.public_bytes())]}
    with pytest.raises(AttestationError, match=message):
        verify_token(token, jwks, _check())


def test_refused_verdict_gets_no_token(issuer: TokenIssuer) -> None:
    with pytest.raises(AttestationError, match="no token"):
        issuer.issue(
            Verdict(False, "contraindicated", None, ("x",)),
            BINDING,
            audience="a",
            config_hash="c",
            now=NOW,
        )


def test_other_key_tampering_and_alg_none_are_refused(issuer: TokenIssuer) -> None:
    token = _issue(issuer)
    other = TokenIssuer("sms-1", SigningKey.generate())
    with pytest.raises(AttestationError, match="signature"):
        verify_token(token, other.jwks(), _check())
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["status"] = "affirming"
    claims["tee"] = "sgx"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AttestationError, match="signature"):
        verify_token(f"{header}.{forged}.{signature}", issuer.jwks(), _check())
    none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    with pytest.raises(AttestationError, match="signature"):
        verify_token(f"{none}.{payload}.", issuer.jwks(), _check())
    with pytest.raises(AttestationError):
        verify_token("not a token", issuer.jwks(), _check())
