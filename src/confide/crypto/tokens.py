"""Signed tokens: JWS compact serialisation with Ed25519 (RFC 8037, alg per RFC 9864).

Everything JOSE goes through joserfc, a maintained library; this module only fixes the
algorithm (``Ed25519``, nothing else is accepted) and the key format (OKP JWKs).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey

from confide.crypto.signing import SigningKey
from confide.errors import AttestationError

ALGORITHM = "Ed25519"


def key_id(public: bytes) -> str:
    """A stable key id: the first 16 hex characters of SHA-256 of the raw public key."""
    return hashlib.sha256(public).hexdigest()[:16]


def public_jwk(public: bytes) -> dict[str, str]:
    key = OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "x": _b64(public)}, parameters={"kid": key_id(public)}
    )
    return {k: str(v) for k, v in key.as_dict(private=False).items()}


class TokenSigner:
    """Signs tokens with one key, imported into joserfc once (not once per token)."""

    def __init__(self, key: SigningKey) -> None:
        kid = key_id(key.public_bytes())
        self._jwk = OKPKey.import_key(key.private_key(), parameters={"kid": kid})
        self._header = {"alg": ALGORITHM, "kid": kid, "typ": "JWT"}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(dict(self._header), claims, self._jwk, algorithms=[ALGORITHM])


def sign_token(key: SigningKey, claims: dict[str, Any]) -> str:
    return TokenSigner(key).sign(claims)


def verify_token_signature(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The token's claims if an ``Ed25519`` key of ``jwks`` signed it; else AttestationError."""
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        decoded = jwt.decode(token, keys, algorithms=[ALGORITHM])
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise AttestationError(f"token signature does not verify ({type(exc).__name__})") from None
    if decoded.header.get("alg") != ALGORITHM:
        raise AttestationError("token is not signed with Ed25519")
    return dict(decoded.claims)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
