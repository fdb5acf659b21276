"""A service proves it holds its signing key: it signs its ``/v1/info`` over a challenge.

The JWKS that clients pin on first contact is only as good as the proof that the server
presenting it holds the private key: without one, an impostor could serve the real sms's
public keys (and its audience). Each ``info()`` call sends 32 random bytes; the sms signs
them with its info under its token key; the client checks that signature with the key
the JWKS names (and then that the JWKS is the pinned one), so the audience and ids it
uses are authenticated.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from confide.crypto.signing import is_weak_public_key, verify_signature
from confide.errors import AuthError

INFO_LABEL = b"confide-info-v1"
CHALLENGE_BYTES = 32


def info_message(challenge: bytes, info: dict[str, Any]) -> bytes:
    """The challenge and the canonical info document (without its proof)."""
    document = {k: v for k, v in info.items() if k != "proof"}
    return challenge + json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def request_audience(deployment_id: str, public: bytes, service: str = "sms") -> str:
    """What a signed request to a service (``sms``, ``hub``, ``storage``) names: its kind,
    its deployment and its signing key. The key
    makes a request useless at any sms but the one whose key the client pinned and saw
    proven: an operator can choose another's deployment id, not hold another's key (a
    malicious sms that named a victim's deployment would otherwise collect requests it
    could replay there)."""
    return f"{service}/{deployment_id}/{public.hex()}"


def jwks_key(jwks: Any) -> bytes:
    """The Ed25519 public key of a one-key JWKS (the sms's token key)."""
    try:
        (key,) = jwks["keys"]
        if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
            raise ValueError("not Ed25519")
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
    except (KeyError, TypeError, ValueError):
        raise AuthError("the sms's JWKS is not one Ed25519 key") from None
    if len(raw) != 32:
        raise AuthError("the sms's JWKS is not one Ed25519 key")
    if is_weak_public_key(raw):
        raise AuthError("the service's JWKS key is of small order: it proves nothing")
    return raw


def check_info_proof(info: dict[str, Any], challenge: bytes) -> None:
    """AuthError unless ``info['proof']`` signs ``challenge`` and the info with its key."""
    proof = info.get("proof")
    try:
        signature = bytes.fromhex(proof) if isinstance(proof, str) else b""
    except ValueError:
        signature = b""
    key = jwks_key(info.get("jwks"))
    if not signature or not verify_signature(
        key, INFO_LABEL, info_message(challenge, info), signature
    ):
        raise AuthError(
            "the sms did not prove that it holds the signing key it presents (bad or missing "
            "proof over our challenge): refusing to talk to it"
        )
