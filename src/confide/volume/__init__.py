"""Encrypted volumes: a directory tree as authenticated, segment-encrypted objects.

>>> from confide.volume import encrypt_tree, decrypt_tree, verify_tree
>>> from confide.crypto import SymmetricKey

See docs/volume-format.md for the format.
"""

from confide.volume.api import (
    VolumeInfo,
    VolumeResult,
    decrypt_tree,
    encrypt_tree,
    read_manifest,
    read_volume_info,
    verify_tree,
)

__all__ = [
    "VolumeInfo",
    "VolumeResult",
    "decrypt_tree",
    "encrypt_tree",
    "read_manifest",
    "read_volume_info",
    "verify_tree",
]
