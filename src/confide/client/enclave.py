"""The enclave's side of attestation: challenge, evidence, attest, check and open.

Runs inside the TEE (the enclave runtime uses it; tests drive it with the sim attester).
The enclave trusts one sms key, pinned in what its owner or requester signed (the task
order's ``sms_key``, or the session's launch description): a configuration is opened only
when that key signed the sealed bytes together with the HPKE context, so a host that
impersonates the sms cannot feed the enclave a configuration of its choosing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from confide.attestation.verifier import Attester, EnclaveBinding
from confide.client.sms import SmsClient
from confide.crypto.info_proof import jwks_key
from confide.crypto.sealing import (
    SEALED_CONFIG_LABEL,
    EnclaveKeys,
    config_hash,
    sealing_info,
    session_subject,
    signed_sealed_message,
)
from confide.crypto.signing import verify_signature
from confide.crypto.tokens import public_jwk, verify_token_signature
from confide.errors import AttestationError


@dataclass(frozen=True)
class ReleasedConfig:
    config: dict[str, Any] = field(repr=False)  # holds secret values: never print it
    token: str
    config_hash: str
    status: str


def attest_and_open(
    client: SmsClient,
    attester: Attester,
    keys: EnclaveKeys,
    *,
    sms_key: bytes,
    target: dict[str, Any],
    service: str,
    worker: str = "",
    signed: bool = False,
) -> ReleasedConfig:
    """Attest to the sms and open the configuration it seals to ``keys``.

    ``target`` is ``{"session": {"owner", "name", "hash"}}`` or
    ``{"task": {"id", "lease_token"}}``; a task's request is signed by the worker's wallet
    (``signed=True``, the client's wallet).
    """
    keys.use_for_attestation()  # once: an old answer can never open for them
    info = client.info()  # its proof shows the server holds the key its JWKS names …
    if jwks_key(info.get("jwks")) != sms_key:  # … and that must be the key we trust
        raise AttestationError("the sms presents another key than the one this enclave trusts")
    sms_id = str(info["sms_id"])
    if "session" in target:
        session = target["session"]
        subject = session_subject(session["owner"], session["name"], session["hash"])
    else:
        subject = target["task"]["id"]
    nonce = bytes.fromhex(
        client.call_json("POST", "/v1/attest/challenge", None, signed=False)["nonce"]
    )
    binding = EnclaveBinding(
        keys.x25519_public, keys.ed25519_public, sms_id, subject, service, worker
    )
    evidence = attester.evidence(binding.report_data(nonce))
    request = {
        "evidence": {"tee": evidence.tee, "data": base64.b64encode(evidence.data).decode()},
        "nonce": nonce.hex(),
        "x25519_public": keys.x25519_public.hex(),
        "ed25519_public": keys.ed25519_public.hex(),
        "service": service,
        "worker": worker,
        **target,
    }
    answer = client.call_json("POST", "/v1/attest", request, signed=signed)
    released = open_grant(
        answer,
        keys,
        sms_key=sms_key,
        sms_id=sms_id,
        subject=subject,
        service=service,
        nonce=nonce,
        worker=worker,
    )
    expected = (
        {k: (v.lower() if k == "owner" else v) for k, v in target["session"].items()}
        if "session" in target
        else None
    )
    got = released.config.get("session") if expected is not None else released.config.get("task")
    if expected is not None and got != expected:
        raise AttestationError("the configuration is for another session than ours")
    if expected is None and (not isinstance(got, dict) or got.get("id") != subject):
        raise AttestationError("the configuration is for another task than ours")
    return released


def open_grant(
    answer: dict[str, Any],
    keys: EnclaveKeys,
    *,
    sms_key: bytes,
    sms_id: str,
    subject: str,
    service: str,
    nonce: bytes,
    worker: str | None = None,
) -> ReleasedConfig:
    """Check the sms's signature over the sealed configuration, open it, and check that
    the token inside is the sms's, for this configuration and for these keys, subject,
    service (and ``worker``, when given). Its expiry is not checked here: an enclave's
    clock is the host's; freshness comes from keys used once (EnclaveKeys)."""
    try:
        sealed = base64.b64decode(answer["sealed"], validate=True)
        signature = bytes.fromhex(answer["signature"])
    except (KeyError, TypeError, ValueError):
        raise AttestationError("the sms's answer is malformed") from None
    info = sealing_info(sms_id=sms_id, subject=subject, service=service, nonce=nonce)
    if not verify_signature(
        sms_key, SEALED_CONFIG_LABEL, signed_sealed_message(info, sealed), signature
    ):
        raise AttestationError(
            "the sealed configuration is not signed by the pinned sms key: refused"
        )
    payload = json.loads(keys.open_sealed(sealed, info))
    config, token = payload["config"], payload["token"]
    digest = config_hash(config)
    claims = verify_token_signature(str(token), {"keys": [public_jwk(sms_key)]})
    ours = {"x25519": keys.x25519_public.hex(), "ed25519": keys.ed25519_public.hex()}
    expected = {
        "config_hash": digest,
        "subject": subject,
        "iss": sms_id,
        "service": service,
        "enclave_keys": ours,
        **({} if worker is None else {"worker": worker}),
    }
    wrong = sorted(name for name, value in expected.items() if claims.get(name) != value)
    if wrong:
        raise AttestationError(
            f"the token inside the sealed configuration is not for it ({', '.join(wrong)})"
        )
    return ReleasedConfig(config, str(token), digest, str(claims.get("status")))
