"""Key derivation: HKDF-SHA-256 (RFC 5869) from one root key to purpose-bound subkeys."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from confide.crypto.encoding import lp
from confide.crypto.keys import Redacted


class SubkeyDeriver(Redacted):
    """HKDF with the extract step done once, so many subkeys cost one HMAC each.

    ``derive(label, *context)`` equals ``HKDF-SHA-256(ikm=root, salt=salt,
    info=lp(label) || context..., L=32)``: a second implementation needs only a
    standard HKDF.
    """

    __slots__ = ("_prk",)

    def __init__(self, root: bytes, salt: bytes) -> None:
        # HKDF-Extract (RFC 5869 section 2.2) is HMAC-Hash(salt, IKM).
        mac = hmac.HMAC(salt, hashes.SHA256())
        mac.update(root)
        self._prk = mac.finalize()

    def derive(self, label: bytes, *context: bytes, length: int = 32) -> bytes:
        info = lp(label) + b"".join(context)
        return HKDFExpand(hashes.SHA256(), length, info).derive(self._prk)


def derive_subkey(root: bytes, salt: bytes, label: bytes, *context: bytes) -> bytes:
    """One 32-byte subkey: HKDF-SHA-256(root, salt, lp(label) || context)."""
    info = lp(label) + b"".join(context)
    return HKDF(hashes.SHA256(), 32, salt, info).derive(root)
