"""Signed requests whose body is named by its SHA-256 instead of being at hand.

A blob upload is signed over ``sha256(body)``, which is the blob's digest, the last part
of its path: the client signs a gigabyte without holding it, and the storage checks the
signature from the headers before it reads a byte, then checks the digest while the body
streams in (a body that does not hash to it is refused, 422, so the signature covered
exactly the bytes kept).

The canonical text is :func:`confide.crypto.requests.canonical_request`'s, with its body
hash line given rather than computed. (Until ``canonical_request`` takes the hash itself,
requested of the lead in /tmp/team/REQUESTS-storage.md, the text is built for an empty body
and that one line replaced: the same text, no second definition of it.)
"""

from __future__ import annotations

import hashlib
import os

from confide.crypto.requests import (
    HEADER_ADDRESS,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SignedBy,
    canonical_request,
    signature_headers,
)
from confide.crypto.wallet import Wallet, recover_signer
from confide.errors import AuthError

_EMPTY = hashlib.sha256(b"").hexdigest()
_BODY_LINE = 5  # the body hash's line in the canonical text


def canonical_for_digest(
    *,
    audience: str,
    method: str,
    path: str,
    query: str,
    content_type: str,
    body_sha256: str,
    timestamp: int,
    nonce: str,
) -> str:
    """:func:`canonical_request`'s text for a body whose SHA-256 is ``body_sha256``."""
    text = canonical_request(
        audience=audience,
        method=method,
        path=path,
        query=query,
        content_type=content_type,
        body=b"",
        timestamp=timestamp,
        nonce=nonce,
    )
    lines = text.split("\n")
    if "\n" in audience + path + query + content_type or lines[_BODY_LINE] != _EMPTY:
        raise AuthError("a signed request's audience, path and headers hold no line break")
    lines[_BODY_LINE] = body_sha256
    return "\n".join(lines)


def sign_for_digest(
    wallet: Wallet,
    *,
    audience: str,
    method: str,
    path: str,
    body_sha256: str,
    content_type: str = "application/octet-stream",
    query: str = "",
    now: int,
) -> dict[str, str]:
    """The four headers signing a request whose body hashes to ``body_sha256``."""
    nonce = os.urandom(16).hex()
    message = canonical_for_digest(
        audience=audience,
        method=method,
        path=path,
        query=query,
        content_type=content_type,
        body_sha256=body_sha256,
        timestamp=now,
        nonce=nonce,
    )
    return {
        HEADER_ADDRESS: wallet.address,
        HEADER_TIMESTAMP: str(now),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: wallet.sign_text(message),
    }


def verify_for_digest(
    headers: dict[str, str],
    *,
    audience: str,
    method: str,
    path: str,
    query: str,
    content_type: str,
    body_sha256: str,
    now: int,
) -> SignedBy:
    """:func:`confide.crypto.requests.verify_request` for a body named by its hash."""
    claimed = signature_headers(headers, now=now)
    message = canonical_for_digest(
        audience=audience,
        method=method,
        path=path,
        query=query,
        content_type=content_type,
        body_sha256=body_sha256,
        timestamp=claimed.timestamp,
        nonce=claimed.nonce,
    )
    if recover_signer(message, claimed.signature) != claimed.address:
        raise AuthError(
            "the signature does not match the request: it was signed for another "
            "service, deployment, method, path, query, body or time, or by another wallet"
        )
    return SignedBy(claimed.address, claimed.nonce, claimed.timestamp)
