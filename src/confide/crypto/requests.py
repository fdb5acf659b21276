"""Signed requests (docs/architecture.md, "Identities"): who sent this, for which service, when.

Every write and every non-public read carries four headers. The signature is EIP-191
over a canonical text that names the audience (service kind and deployment id), the
method, path and canonical query, the content type, the SHA-256 of the body, the
timestamp and a 128-bit nonce, so a request signed for one deployment or service, one
path or one body is useless for any other. The path is the one sent, in its raw
percent-encoded form (what the server receives as the ASGI ``raw_path``): its decoded
form may be another path (``a%2Fb``), so it is never what is signed. Freshness: the
timestamp must be within ±300 s of the server's clock, and the server records each
(address, nonce) under a UNIQUE constraint in the same transaction as the request's
effect (``confide.db``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlencode

from confide.crypto.wallet import normalise_address, recover_signer
from confide.errors import AuthError

LABEL = "confide-request-v1"
WINDOW_SECONDS = 300
HEADER_ADDRESS = "X-Confide-Address"
HEADER_TIMESTAMP = "X-Confide-Timestamp"
HEADER_NONCE = "X-Confide-Nonce"
HEADER_SIGNATURE = "X-Confide-Signature"
_NONCE = re.compile(r"[0-9a-f]{32}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"(0x)?[0-9a-fA-F]{130}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def canonical_query(params: Mapping[str, str] | list[tuple[str, str]]) -> str:
    """Query parameters sorted by name then value, percent-encoded (RFC 3986)."""
    items = sorted(params.items() if isinstance(params, Mapping) else params)
    return urlencode(items, quote_via=quote, safe="-_.~")


def canonical_request(
    *,
    audience: str,
    method: str,
    path: str,
    query: str,
    content_type: str,
    body: bytes = b"",
    timestamp: int,
    nonce: str,
    body_sha256: str | None = None,
) -> str:
    """The exact text a wallet signs for a request. ``path`` is the raw path, as sent
    (percent-escapes kept, no query); ``query`` is :func:`canonical_query`'s. A body too
    large to hold (a streamed blob) is named by ``body_sha256`` (64 lower-case hex)
    instead: the server then checks the bytes it streams against that digest."""
    if body_sha256 is None:
        digest = hashlib.sha256(body).hexdigest()
    elif _DIGEST.fullmatch(body_sha256):
        digest = body_sha256
    else:
        raise AuthError("a body's SHA-256 is 64 lower-case hex characters")
    return "\n".join(
        (
            LABEL,
            audience,
            method.upper(),
            f"{path}?{query}",
            content_type,
            digest,
            str(timestamp),
            nonce,
        )
    )


class RequestSigner(Protocol):
    """What signs a request: a :class:`Wallet`, or a stand-in that asks one (the enclave
    runtime's relay signer asks the worker's wallet, which signs only requests)."""

    @property
    def address(self) -> str: ...

    def sign_text(self, message: str) -> str: ...


def sign_request(
    wallet: RequestSigner,
    *,
    audience: str,
    method: str,
    path: str,
    query: str = "",
    content_type: str = "",
    body: bytes = b"",
    now: int,
    body_sha256: str | None = None,
) -> dict[str, str]:
    """The four headers that sign this request (``body_sha256``: see
    :func:`canonical_request`)."""
    nonce = os.urandom(16).hex()
    message = canonical_request(
        audience=audience,
        method=method,
        path=path,
        query=query,
        content_type=content_type,
        body=body,
        timestamp=now,
        nonce=nonce,
        body_sha256=body_sha256,
    )
    return {
        HEADER_ADDRESS: wallet.address,
        HEADER_TIMESTAMP: str(now),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: wallet.sign_text(message),
    }


@dataclass(frozen=True)
class SignedBy:
    """A verified request's signer and nonce (which the caller must then record)."""

    address: str
    nonce: str
    timestamp: int


def verify_request(
    headers: Mapping[str, str],
    *,
    audience: str,
    method: str,
    path: str,
    query: str,
    content_type: str,
    body: bytes = b"",
    now: int,
    body_sha256: str | None = None,
) -> SignedBy:
    """Check the signature headers; raise AuthError saying which check failed.

    Replay is not checked here: the caller records (address, nonce) with the request's
    effect, so that a replay fails even across replicas and restarts.
    """
    claimed = signature_headers(headers, now=now)
    message = canonical_request(
        audience=audience,
        method=method,
        path=path,
        query=query,
        content_type=content_type,
        body=body,
        timestamp=claimed.timestamp,
        nonce=claimed.nonce,
        body_sha256=body_sha256,
    )
    signer = recover_signer(message, claimed.signature)
    if signer != claimed.address:
        raise AuthError(
            "the signature does not match the request: it was signed for another "
            "service, deployment, method, path, query, body or time, or by another wallet"
        )
    return SignedBy(claimed.address, claimed.nonce, claimed.timestamp)


@dataclass(frozen=True)
class SignatureHeaders:
    """The four headers of a signed request, well formed and fresh, not yet verified."""

    address: str
    timestamp: int
    nonce: str
    signature: str


def signature_headers(headers: Mapping[str, str], *, now: int) -> SignatureHeaders:
    """The checks of :func:`verify_request` that need no body: the four headers are
    present and well formed and the timestamp is fresh. A server runs them before it
    reads a body (``confide.web.limits``), so that an unsigned request costs no buffer.
    """
    values = {name: _header(headers, name) for name in _HEADERS}
    address = normalise_address(values[HEADER_ADDRESS])
    if not _TIMESTAMP.fullmatch(values[HEADER_TIMESTAMP]):
        raise AuthError(f"{HEADER_TIMESTAMP} is not a Unix time in seconds")
    timestamp = int(values[HEADER_TIMESTAMP])
    if abs(now - timestamp) > WINDOW_SECONDS:
        raise AuthError(
            f"request timestamp is {now - timestamp:+d} s off the server's clock "
            f"(allowed: ±{WINDOW_SECONDS} s); check the client's clock"
        )
    nonce = values[HEADER_NONCE]
    if not _NONCE.fullmatch(nonce):
        raise AuthError(f"{HEADER_NONCE} is 32 lower-case hex characters (128 bits)")
    signature = values[HEADER_SIGNATURE]
    if not _SIGNATURE.fullmatch(signature):
        raise AuthError(f"{HEADER_SIGNATURE} is malformed: 65 bytes as 0x and 130 hex")
    return SignatureHeaders(address, timestamp, nonce, signature)


_HEADERS = (HEADER_ADDRESS, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    raise AuthError(f"request is not signed: header {name} is missing")
