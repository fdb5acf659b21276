"""Ed25519 signing keys for platforms, enclaves and the sms, and domain-separated signatures."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from confide.crypto.encoding import lp
from confide.crypto.keys import Redacted


class SigningKey(Redacted):
    """An Ed25519 private key; signs ``lp(label) || message`` so no signature made for one
    purpose verifies for another."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        """The 32-byte private seed, for storage in a 0600 file only."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, label: bytes, message: bytes) -> bytes:
        return self._key.sign(lp(label) + message)

    def private_key(self) -> Ed25519PrivateKey:
        """The library key object, for JOSE signing inside confide.crypto only."""
        return self._key


# Ed25519 public keys of small order (libsodium's blocklist, compared with the sign bit
# cleared): a signature made of zeros verifies under one of them for about one message in
# eight, so such a key proves nothing and signs for anyone.
_SMALL_ORDER = frozenset(
    bytes.fromhex(text)
    for text in (
        "00" * 32,
        "01" + "00" * 31,
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ec" + "ff" * 30 + "7f",
        "ed" + "ff" * 30 + "7f",
        "ee" + "ff" * 30 + "7f",
    )
)


def is_weak_public_key(public: bytes) -> bool:
    """Whether ``public`` is an Ed25519 key of small order (refused wherever a key is
    taken: it would let anyone sign)."""
    return len(public) == 32 and public[:31] + bytes([public[31] & 0x7F]) in _SMALL_ORDER


def verify_signature(public: bytes, label: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature of ``lp(label) || message`` (never
    under a key of small order)."""
    if is_weak_public_key(public):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, lp(label) + message)
    except (InvalidSignature, ValueError):
        return False
    return True
