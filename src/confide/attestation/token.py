"""Attestation result tokens, in the spirit of the RATS EAR format.

After a successful verification the sms signs a JWS (``Ed25519``) saying what it
verified and for whom: status, TEE type, measurement, TCB status, advisories, both
enclave keys, the session or task, service, worker and configuration hash. Clients
check it offline against the sms's published JWKS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from confide.attestation.verifier import AFFIRMING, WARNING, EnclaveBinding, Verdict
from confide.crypto.signing import SigningKey
from confide.crypto.tokens import TokenSigner, public_jwk, verify_token_signature
from confide.errors import AttestationError
from confide.grants import Grant, issue_grant

PROFILE = "tag:confide.dev,2026:ear-v1"
DEFAULT_TTL_SECONDS = 3600


class TokenIssuer:
    """Signs attestation results for one sms."""

    def __init__(self, sms_id: str, key: SigningKey) -> None:
        self.sms_id = sms_id
        self._key = key
        self._signer = TokenSigner(key)

    def public_key(self) -> bytes:
        """The Ed25519 public key that task orders pin (``sms_key``) and runtimes trust."""
        return self._key.public_bytes()

    def sign_blob(self, label: bytes, message: bytes) -> bytes:
        """Sign a sealed configuration with the token key, so an enclave that pinned
        this sms can tell its configuration from one a host made up."""
        return self._key.sign(label, message)

    def grant(self, grant: Grant) -> str:
        """A storage grant signed with the token key (the storage trusts this sms's key
        as an issuer, read from its /v1/info)."""
        return issue_grant(self._key, grant)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self._key.public_bytes())]}

    def issue(
        self,
        verdict: Verdict,
        binding: EnclaveBinding,
        *,
        audience: str,
        config_hash: str,
        now: int,
        ttl: int = DEFAULT_TTL_SECONDS,
        jti: str | None = None,
    ) -> str:
        if not verdict.ok or verdict.appraisal is None:
            raise AttestationError("no token for a refused attestation")
        appraisal = verdict.appraisal
        claims = {
            "eat_profile": PROFILE,
            "iss": self.sms_id,
            "aud": audience,
            "iat": now,
            "exp": now + ttl,
            "jti": jti or os.urandom(16).hex(),
            "status": verdict.status,
            "tee": appraisal.tee,
            "measurement": str(appraisal.measurement),
            "tcb_status": appraisal.tcb_status,
            "advisories": list(appraisal.advisories),
            "debug": appraisal.debug,
            "enclave_keys": {
                "x25519": binding.x25519_public.hex(),
                "ed25519": binding.ed25519_public.hex(),
            },
            "subject": binding.subject,
            "service": binding.service,
            "worker": binding.worker,
            "config_hash": config_hash,
        }
        return self._signer.sign(claims)


MAX_LIFETIME_SECONDS = 24 * 3600


@dataclass(frozen=True)
class TokenCheck:
    """What a client accepts. Each weakness must be allowed on its own: accepting a
    hardware platform that needs SW hardening does not accept a simulation."""

    issuer: str
    audience: str
    now: int
    allow_sim: bool = False
    allow_debug: bool = False
    tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    expect: tuple[tuple[str, str], ...] = ()  # e.g. (("subject", task_id), ("tee", "sgx"))


def verify_token(token: str, jwks: dict[str, Any], check: TokenCheck) -> dict[str, Any]:
    """Verify an attestation token offline; return its claims or raise naming the check."""
    claims = verify_token_signature(token, jwks)
    if claims.get("eat_profile") != PROFILE:
        raise AttestationError("token is not a confide attestation result")
    if claims.get("iss") != check.issuer:
        raise AttestationError(f"token issuer {claims.get('iss')!r} is not {check.issuer!r}")
    if claims.get("aud") != check.audience:
        raise AttestationError(f"token audience {claims.get('aud')!r} is not {check.audience!r}")
    _check_times(claims, check.now)
    status = claims.get("status")
    if status not in (AFFIRMING, WARNING):
        raise AttestationError(f"token status {status!r} is not acceptable")
    tee = claims.get("tee")
    if tee == "sim" and not check.allow_sim:
        raise AttestationError("token is for a simulated TEE, which this check does not allow")
    if claims.get("debug") is not False and not check.allow_debug:
        raise AttestationError("token is for a debug enclave, which this check does not allow")
    if tee != "sim" and claims.get("tcb_status") not in check.tcb_statuses:
        raise AttestationError(f"token TCB status {claims.get('tcb_status')!r} is not accepted")
    if claims.get("advisories") and check.tcb_statuses == {"UpToDate"}:
        raise AttestationError("token lists advisories, which this check does not accept")
    for name, expected in check.expect:
        if claims.get(name) != expected:
            raise AttestationError(f"token {name} {claims.get(name)!r} is not {expected!r}")
    return claims


def _check_times(claims: dict[str, Any], now: int) -> None:
    issued, expiry, not_before = claims.get("iat"), claims.get("exp"), claims.get("nbf")
    if type(issued) is not int or type(expiry) is not int:
        raise AttestationError("token has no valid iat/exp")
    if now >= expiry:
        raise AttestationError("token expired")
    if issued > now + 300:
        raise AttestationError("token issued in the future")
    if expiry - issued > MAX_LIFETIME_SECONDS:
        raise AttestationError("token lives longer than any confide issues")
    if not_before is not None and (type(not_before) is not int or now < not_before):
        raise AttestationError("token not valid yet")
