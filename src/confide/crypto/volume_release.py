"""A session volume's key released to one of the session's readers (docs/scone-workflow.md).

The sms seals the key with HPKE to a one-time X25519 public key that the reader sent in
its signed request, and signs the answer with its token key. The HPKE context and the
signed message bind the same facts: which sms (its audience), which session, volume,
version (the tag the key opens, and the blob that holds it) and which reader's public
key. A sealed key therefore opens for no other reader, volume or version, and the
reader's client checks the signature against the sms key it pinned before it opens
anything, so neither a hub nor a storage nor a proxy can hand it another key or tag.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from confide.crypto.encoding import lp
from confide.crypto.sealing import open_with, seal_to
from confide.crypto.signing import verify_signature
from confide.errors import AuthError

RELEASE_LABEL = b"confide-volume-key-v1"
KEY_BYTES = 32


@dataclass(frozen=True)
class VolumeRelease:
    """What a released volume key is bound to."""

    audience: str  # the sms's
    owner: str
    session: str
    volume: str
    tag: str  # the version the key opens (64 hex)
    blob: str  # the storage blob holding that version ("" when none was recorded)
    reader_public: bytes  # the reader's one-time X25519 public key

    def info(self) -> bytes:
        fields = (self.audience, self.owner, self.session, self.volume, self.tag, self.blob)
        return RELEASE_LABEL + b"".join(lp(f.encode()) for f in fields) + lp(self.reader_public)

    def message(self, sealed: bytes) -> bytes:
        """What the sms signs: the context and the sealed bytes."""
        return self.info() + lp(sealed)


def seal_release(release: VolumeRelease, key: bytes) -> bytes:
    """The key sealed to the reader for this context (ValueError: not an X25519 key)."""
    return seal_to(key, release.reader_public, release.info())


def open_release(
    release: VolumeRelease,
    sealed: bytes,
    signature: bytes,
    sms_key: bytes,
    private: X25519PrivateKey,
) -> bytes:
    """The volume key, once the sms whose key the caller pinned (``sms_key``) signed this
    answer for exactly this context; AuthError otherwise, and nothing is opened."""
    if not verify_signature(sms_key, RELEASE_LABEL, release.message(sealed), signature):
        raise AuthError(
            "the volume key's answer is not signed by the pinned sms for this session, "
            "volume, tag and request: refusing it"
        )
    try:
        key = open_with(sealed, private, release.info())
    except ValueError:
        raise AuthError("the sealed volume key does not open for this request") from None
    if len(key) != KEY_BYTES:
        raise AuthError(f"a volume key is {KEY_BYTES} bytes, the sms sent {len(key)}")
    return key
