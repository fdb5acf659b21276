"""Whose grants the storage accepts: each ``--trust URL``'s signing key, read from its
``/v1/info`` with a proof over a fresh challenge (:mod:`confide.crypto.info_proof`).

A grant names its issuer by audience (``hub/<deployment>/<key hex>``); the storage maps
each trusted audience to the Ed25519 key that must have signed it. The audience read
must name the very key the service proved it holds, so a service cannot pass another's
audience off as its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import httpx

from confide.crypto.info_proof import CHALLENGE_BYTES, check_info_proof, jwks_key
from confide.errors import AuthError, ConfideError

TIMEOUT_SECONDS = 10.0


def fetch_issuers(urls: Iterable[str], timeout: float = TIMEOUT_SECONDS) -> dict[str, bytes]:
    """Audience -> Ed25519 public key of each service at ``urls``; ConfideError naming
    the URL that cannot be reached or does not prove its key."""
    issuers: dict[str, bytes] = {}
    for url in urls:
        audience, key = fetch_issuer(url, timeout)
        issuers[audience] = key
    return issuers


def fetch_issuer(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[str, bytes]:
    base = url.rstrip("/")
    challenge = os.urandom(CHALLENGE_BYTES)
    try:
        response = httpx.get(
            f"{base}/v1/info", params={"challenge": challenge.hex()}, timeout=timeout
        )
        response.raise_for_status()
        info = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfideError(
            f"--trust {url}: cannot read its /v1/info ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("audience"), str):
        raise ConfideError(f"--trust {url}: its /v1/info names no audience")
    try:
        check_info_proof(info, challenge)
        key = jwks_key(info.get("jwks"))
    except AuthError as exc:
        raise ConfideError(f"--trust {url}: {exc}") from None
    audience: str = info["audience"]
    if not audience.endswith("/" + key.hex()):
        raise ConfideError(
            f"--trust {url}: its audience {audience} does not name the key it proved"
        )
    return audience, key
