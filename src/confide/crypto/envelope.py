"""Secrets at rest: envelope encryption under a key-encryption key (KEK).

Each secret value gets a fresh 256-bit data key; the value is AES-256-GCM under the data
key, and the data key is AES-256-GCM under the KEK. Both use the same associated data:
the owner, kind, name, version, app or dataset address, KEK id, the row's id and the
owner's release policy, so a ciphertext copied to another row, secret, version or owner
does not decrypt, and neither does one whose release policy was edited in the database
(a policy cannot be widened behind its owner's back). The KEK
lives in a 0600 file (created on first start) or an environment variable, and has an id
so it can be rotated: rows name the KEK that wrapped them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from confide.crypto.encoding import lp
from confide.crypto.keys import Redacted
from confide.errors import SecretError

_KEK_TEXT = re.compile(r"([A-Za-z0-9_-]{1,32}):([0-9a-f]{64})")
_LABEL = b"confide-secret-at-rest-v1"


class KeyEncryptionKey(Redacted):
    __slots__ = ("_aead", "kek_id")

    def __init__(self, kek_id: str, key: bytes) -> None:
        if len(key) != 32 or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", kek_id):
            raise SecretError("a KEK is an id ([A-Za-z0-9_-]{1,32}) and 32 bytes")
        self.kek_id = kek_id
        self._aead = AESGCM(key)

    @classmethod
    def parse(cls, text: str, where: str) -> KeyEncryptionKey:
        match = _KEK_TEXT.fullmatch(text.strip())
        if match is None:
            raise SecretError(f"{where} is not a KEK (ID:64 lower-case hex)")
        return cls(match[1], bytes.fromhex(match[2]))

    @classmethod
    def load_or_create(cls, path: Path) -> KeyEncryptionKey:
        """Read the KEK file, or create it (mode 0600) with a new key and a random id (so
        keys made on different hosts are told apart, not taken for tampering)."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: read theirs
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(f"k-{os.urandom(6).hex()}:{os.urandom(32).hex()}\n")
                    handle.flush()
                    os.fsync(handle.fileno())
        return cls.parse(path.read_text(), str(path))

    def wrap(self, nonce: bytes, data_key: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, wrapped, aad)


@dataclass(frozen=True)
class SecretContext:
    """Where a secret lives; all of it is authenticated with the value."""

    row_id: str
    owner: str
    kind: str  # app | requester | dataset | result-key
    name: str
    version: int
    subject: str = ""  # the app or dataset address, when the secret belongs to one
    policy: str = ""  # the release policy, canonical JSON ("" for the default)

    def aad(self, kek_id: str) -> bytes:
        fields = [
            _LABEL,
            self.row_id.encode(),
            self.owner.encode(),
            self.kind.encode(),
            self.name.encode(),
            str(self.version).encode(),
            self.subject.encode(),
            kek_id.encode(),
        ]
        # The default policy adds no field, so rows sealed before policies existed still
        # open; any other policy is one more length-prefixed field (unambiguous either way).
        if self.policy:
            fields.append(self.policy.encode())
        return b"".join(lp(field) for field in fields)


@dataclass(frozen=True)
class SealedValue:
    """What is stored: never the value or the data key in the clear."""

    kek_id: str
    wrapped_key: bytes  # 12-byte nonce || AES-GCM(KEK, data key)
    ciphertext: bytes  # 12-byte nonce || AES-GCM(data key, value)


def seal_value(kek: KeyEncryptionKey, value: bytes, context: SecretContext) -> SealedValue:
    aad = context.aad(kek.kek_id)
    data_key = os.urandom(32)
    key_nonce, value_nonce = os.urandom(12), os.urandom(12)
    wrapped = key_nonce + kek.wrap(key_nonce, data_key, aad)
    ciphertext = value_nonce + AESGCM(data_key).encrypt(value_nonce, value, aad)
    return SealedValue(kek.kek_id, wrapped, ciphertext)


def open_value(
    keks: dict[str, KeyEncryptionKey], sealed: SealedValue, context: SecretContext
) -> bytes:
    """The value, if this row's context and a known KEK authenticate it."""
    kek = keks.get(sealed.kek_id)
    if kek is None:
        raise SecretError(f"secret was sealed under KEK {sealed.kek_id!r}, which is not loaded")
    aad = context.aad(sealed.kek_id)
    try:
        data_key = kek.unwrap(sealed.wrapped_key[:12], sealed.wrapped_key[12:], aad)
        return AESGCM(data_key).decrypt(sealed.ciphertext[:12], sealed.ciphertext[12:], aad)
    except (InvalidTag, ValueError):
        raise SecretError(
            f"stored secret {context.kind}/{context.name} v{context.version} failed "
            f"authentication (moved to another row, its release policy or another field "
            f"altered, or sealed under another key): it cannot be released"
        ) from None
