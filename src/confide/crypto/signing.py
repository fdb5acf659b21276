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


def verify_signature(public: bytes, label: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature of ``lp(label) || message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, lp(label) + message)
    except (InvalidSignature, ValueError):
        return False
    return True
