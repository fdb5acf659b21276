"""The segment cipher: AES-256-GCM in the STREAM construction.

A file's content is cut into fixed-size segments; segment ``i`` is sealed with the nonce
``i`` as an 11-byte big-endian counter followed by one flag byte, 1 for the last segment
and 0 otherwise (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, as
used by age). Each file has its own key, so a nonce never repeats under a key; dropping,
repeating or reordering segments changes a nonce, and cutting the tail off loses the
segment that carries the last flag, so each of those fails authentication.

A volume's manifest is sealed whole, once, by ``seal_manifest`` with the same AEAD under
a key derived for that volume version alone, so its fixed zero nonce never repeats.
"""

from __future__ import annotations

import mmap

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from confide.crypto.keys import Redacted

TAG_BYTES = 16
WritableBuffer = bytearray | mmap.mmap
SEGMENT_OVERHEAD = TAG_BYTES
_MAX_COUNTER = (1 << 88) - 1
_MANIFEST_NONCE = bytes(12)  # the key is single-use: one manifest per volume version


class SegmentAuthenticationError(Exception):
    """A segment or a manifest did not authenticate (the caller raises VolumeIntegrityError)."""


def stream_nonce(index: int, last: bool) -> bytes:
    """The 12-byte nonce of segment ``index``."""
    if not 0 <= index <= _MAX_COUNTER:
        raise ValueError("segment counter out of range")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class SegmentCipher(Redacted):
    """Seals and opens the segments of one file under that file's key."""

    __slots__ = ("_aead",)

    def __init__(self, file_key: bytes) -> None:
        self._aead = AESGCM(file_key)

    def seal_into(self, index: int, last: bool, plaintext: memoryview, out: WritableBuffer) -> int:
        """Write the sealed segment to ``out`` (len(plaintext) + 16 bytes); return its size."""
        size = len(plaintext) + TAG_BYTES
        self._aead.encrypt_into(stream_nonce(index, last), plaintext, None, memoryview(out)[:size])
        return size

    def seal(self, index: int, last: bool, plaintext: bytes) -> bytes:
        return self._aead.encrypt(stream_nonce(index, last), plaintext, None)

    def open_into(self, index: int, last: bool, sealed: memoryview, out: WritableBuffer) -> int:
        """Authenticate and decrypt one segment into ``out``; return the plaintext size."""
        size = len(sealed) - TAG_BYTES
        if size < 0:
            raise SegmentAuthenticationError
        try:
            self._aead.decrypt_into(stream_nonce(index, last), sealed, None, memoryview(out)[:size])
        except InvalidTag:
            raise SegmentAuthenticationError from None
        return size

    def open(self, index: int, last: bool, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(stream_nonce(index, last), sealed, None)
        except InvalidTag:
            raise SegmentAuthenticationError from None


def segment_cipher(file_key: bytes) -> SegmentCipher:
    """The cipher for one file's segments."""
    return SegmentCipher(file_key)


def seal_manifest(manifest_key: bytes, manifest: bytes, header: bytes) -> bytes:
    """Seal a volume's manifest under its single-use key, authenticating ``header`` too."""
    return AESGCM(manifest_key).encrypt(_MANIFEST_NONCE, manifest, header)


def open_manifest(manifest_key: bytes, sealed: bytes, header: bytes) -> bytes:
    """Authenticate and decrypt a manifest sealed by ``seal_manifest``."""
    try:
        return AESGCM(manifest_key).decrypt(_MANIFEST_NONCE, sealed, header)
    except InvalidTag:
        raise SegmentAuthenticationError from None
