"""The requester's result-encryption key: X25519, results are sealed to its public half.

The private key stays with the requester (``$CONFIDE_HOME/result-key``, PKCS#8 PEM, mode
0600); the sms holds only the public key, as raw 32 bytes, and task orders pin it by the
SHA-256 of those bytes (:func:`result_key_sha256`), so a host cannot swap in its own key.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from confide.crypto.keys import Redacted, write_secret_file
from confide.errors import KeyFileError

PUBLIC_KEY_BYTES = 32
_HEX_PUBLIC = re.compile(r"(0x)?([0-9a-fA-F]{64})")
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class ResultKeyPair(Redacted):
    """An X25519 key pair; the private half is written to a file, never shown."""

    __slots__ = ("_private",)

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> ResultKeyPair:
        return cls(X25519PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(*_RAW)

    def write(self, path: Path, *, overwrite: bool) -> None:
        """Write the private key (PKCS#8 PEM, mode 0600), complete or not at all; an
        existing file is replaced only when ``overwrite``."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret_file(
            path,
            pem,
            overwrite=overwrite,
            exists=f"{path} already exists; not overwritten (use --force to replace it: "
            f"results sealed to the old key can then no longer be opened)",
        )


def result_key_sha256(public_key: bytes) -> str:
    """What a task order pins: SHA-256 (hex) of the raw 32-byte public key."""
    return hashlib.sha256(public_key).hexdigest()


def check_public_key(raw: bytes) -> bytes:
    """``raw`` if it is a usable X25519 public key (32 bytes, not a low-order point)."""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise KeyFileError(
            f"a result-encryption key is a raw {PUBLIC_KEY_BYTES}-byte X25519 public key "
            f"(got {len(raw)} bytes)"
        )
    try:  # a low-order point makes every shared secret zero: the exchange refuses it
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise KeyFileError("the result-encryption key is not a usable X25519 key") from None
    return raw


def public_key_from_file(path: Path) -> bytes:
    """The raw public key held in ``path``: 64 hex characters, a public-key PEM, or the
    private-key PEM (its public half). Nothing of the file is echoed in an error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} does not exist (make one with `confide result generate-encryption-keypair`)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    text = data.decode("ascii", errors="replace").strip()
    match = _HEX_PUBLIC.fullmatch(text)
    if match is not None:
        return check_public_key(bytes.fromhex(match[2]))
    if "PRIVATE KEY" in text:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            private = None
        if isinstance(private, X25519PrivateKey):
            return check_public_key(private.public_key().public_bytes(*_RAW))
    elif "PUBLIC KEY" in text:
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            public = None
        if isinstance(public, X25519PublicKey):
            return check_public_key(public.public_bytes(*_RAW))
    raise KeyFileError(
        f"{path} holds no X25519 key: expected 64 hex characters (the public key), a "
        f"public-key PEM, or the private-key PEM written by generate-encryption-keypair"
    )
