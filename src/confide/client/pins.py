"""Where a service is and which key it must hold: plain http only to this machine, pins
of a service's signing keys remembered on first contact (``$CONFIDE_HOME/trust/``) under
one name per address however it is spelled, and the key fingerprints users compare."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
from pathlib import Path

import httpx

from confide.errors import AuthError


def write_pin(path: Path, url: str, jwks_json: str) -> None:
    """Write a pin file (complete or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}")
    tmp.write_text(json.dumps({"url": url, "jwks": jwks_json}) + "\n")
    tmp.replace(path)


def key_fingerprint(public: bytes) -> str:
    """The fingerprint of a service's signing key: SHA-256 hex of its raw 32 bytes."""
    return hashlib.sha256(public).hexdigest()


def pin_name(base_url: str) -> str:
    """The name a pin is kept under: the service's origin and path in one form, so that
    ``HTTPS://SMS.example:443/`` and ``https://sms.example`` share one pin (two forms of
    one address must not each start trust on first use again)."""
    url = httpx.URL(base_url)
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    origin = f"{url.scheme}://{url.host}:{port}{url.path.rstrip('/')}"
    return hashlib.sha256(origin.encode()).hexdigest()[:16]


def is_loopback_url(url: str) -> bool:
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_tls_beyond_loopback(url: str) -> None:
    """Secrets never cross a network in the clear: plain http only to this machine."""
    parsed = httpx.URL(url)
    if parsed.scheme == "https":
        return
    loopback = False
    with contextlib.suppress(ValueError):
        loopback = is_loopback_url(url)
    if parsed.scheme != "http" or not loopback:
        raise AuthError(f"refusing {url}: use https:// (plain http only to 127.0.0.1)")
