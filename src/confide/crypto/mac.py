"""Message authentication: the volume tag."""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _crypto_hmac


def volume_tag(tag_key: bytes, parts: Iterable[bytes]) -> bytes:
    """HMAC-SHA-256 over the concatenation of ``parts``."""
    mac = _crypto_hmac.HMAC(tag_key, hashes.SHA256())
    for part in parts:
        mac.update(part)
    return mac.finalize()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two secrets or MACs without a timing side channel."""
    return _hmac.compare_digest(a, b)
