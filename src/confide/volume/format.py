"""The on-disk format of an encrypted volume, version 1 (see docs/volume-format.md).

A volume is a directory::

    volume.fspf        header (40 bytes) || manifest ciphertext || stored tag (32 bytes)
    objects/<32 hex>   one object per regular file: its sealed segments, back to back

Everything here is pure: bytes in, bytes out. Reading files and running the segment
work in parallel live in :mod:`confide.volume.engine`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from confide.crypto import SymmetricKey, constant_time_equal, volume_tag
from confide.crypto.digest import list_digest
from confide.crypto.encoding import u16
from confide.crypto.kdf import SubkeyDeriver
from confide.crypto.keys import Redacted
from confide.crypto.segment import SEGMENT_OVERHEAD
from confide.errors import VolumeIntegrityError

MAGIC = b"CONFIDEV"
FORMAT_VERSION = 1
SUITE_AES256GCM_HKDF_SHA256 = 1
SEGMENT_SIZE = 1 << 20
SEALED_SEGMENT_SIZE = SEGMENT_SIZE + SEGMENT_OVERHEAD
VOLUME_FILE = "volume.fspf"
OBJECTS_DIR = "objects"
TAG_BYTES = 32
ID_BYTES = 16

_HEADER = struct.Struct(">8sHHI16sQ")
HEADER_BYTES = _HEADER.size  # 40
_KDF_SALT = b"confide-volume"
_LABEL_MANIFEST = b"confide-volume manifest-key"
_LABEL_TAG = b"confide-volume tag-key"
_LABEL_OBJECT = b"confide-volume object-key"
_LABEL_DIGEST = b"confide-volume object-digest"
MAX_MANIFEST_BYTES = 1 << 30


@dataclass(frozen=True)
class Header:
    """The clear-text, authenticated header of ``volume.fspf``."""

    version: int
    suite: int
    segment_size: int
    volume_version_id: bytes
    manifest_length: int

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.version,
            self.suite,
            self.segment_size,
            self.volume_version_id,
            self.manifest_length,
        )


def parse_header(blob: bytes, volume: str) -> Header:
    """Parse the header of a ``volume.fspf`` blob; any defect is an VolumeIntegrityError."""
    if len(blob) < HEADER_BYTES + TAG_BYTES:
        raise VolumeIntegrityError(f"volume {volume}: {VOLUME_FILE} is truncated")
    magic, version, suite, segment_size, vvid, manifest_length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise VolumeIntegrityError(f"volume {volume}: {VOLUME_FILE} is not a confide volume header")
    if version != FORMAT_VERSION or suite != SUITE_AES256GCM_HKDF_SHA256:
        raise VolumeIntegrityError(
            f"volume {volume}: header names format {version} suite {suite}, which this "
            f"confide does not read (damaged, or written by a newer confide)"
        )
    if segment_size != SEGMENT_SIZE:
        raise VolumeIntegrityError(f"volume {volume}: header has a damaged segment size")
    if manifest_length != len(blob) - HEADER_BYTES - TAG_BYTES:
        raise VolumeIntegrityError(
            f"volume {volume}: {VOLUME_FILE} length does not match its header"
        )
    return Header(version, suite, segment_size, vvid, manifest_length)


class VolumeKeys(Redacted):
    """The subkeys of one volume version, derived from the volume key by HKDF-SHA-256."""

    __slots__ = ("_deriver", "_prefix", "manifest_key", "tag_key")

    def __init__(self, key: SymmetricKey, volume_version_id: bytes) -> None:
        self._deriver = SubkeyDeriver(key.expose(), _KDF_SALT)
        self._prefix = u16(FORMAT_VERSION) + volume_version_id
        self.manifest_key = self._deriver.derive(_LABEL_MANIFEST, self._prefix)
        self.tag_key = self._deriver.derive(_LABEL_TAG, self._prefix)

    def object_key(self, object_id: bytes) -> bytes:
        return self._deriver.derive(_LABEL_OBJECT, self._prefix, object_id)


def segment_count(size: int) -> int:
    """Segments of a file of ``size`` bytes: an empty file still has one (empty, last)."""
    return max(1, -(-size // SEGMENT_SIZE))


def sealed_size(size: int) -> int:
    """Size of the object that holds a file of ``size`` bytes."""
    return size + segment_count(size) * SEGMENT_OVERHEAD


def object_digest(segment_digests: list[bytes]) -> str:
    """The object's ciphertext digest: a digest over the digest of each sealed segment.

    Two levels rather than one hash of the whole object, so that the segments of one
    large file can be sealed and hashed on all cores at once.
    """
    return list_digest(_LABEL_DIGEST, segment_digests).hex()


def compute_tag(keys: VolumeKeys, header: bytes, manifest_ciphertext: bytes) -> bytes:
    return volume_tag(keys.tag_key, (header, manifest_ciphertext))


def tags_equal(a: bytes, b: bytes) -> bool:
    return constant_time_equal(a, b)
