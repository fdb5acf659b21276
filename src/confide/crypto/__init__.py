"""Every cryptographic choice confide makes, named by purpose.

Callers never touch a primitive directly: they ask for a ``segment_cipher``, a
``seal_manifest``, a ``volume_tag`` or a ``derive_subkey`` and this package decides
which algorithm that is. Swapping an algorithm is then a change in one place plus a new
format version.
"""

from confide.crypto.encoding import lp
from confide.crypto.kdf import derive_subkey
from confide.crypto.keys import SymmetricKey, read_key_file, write_key_file
from confide.crypto.mac import constant_time_equal, volume_tag
from confide.crypto.segment import (
    SEGMENT_OVERHEAD,
    SegmentAuthenticationError,
    SegmentCipher,
    open_manifest,
    seal_manifest,
    segment_cipher,
)

__all__ = [
    "SEGMENT_OVERHEAD",
    "SegmentAuthenticationError",
    "SegmentCipher",
    "SymmetricKey",
    "constant_time_equal",
    "derive_subkey",
    "lp",
    "open_manifest",
    "read_key_file",
    "seal_manifest",
    "segment_cipher",
    "volume_tag",
    "write_key_file",
]
