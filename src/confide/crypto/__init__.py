"""Every cryptographic choice confide makes, named by purpose.

Callers never touch a primitive directly: they ask for a ``segment_cipher``, a
``seal_manifest``, a ``volume_tag`` or a ``derive_subkey`` and this package decides
which algorithm that is. Swapping an algorithm is then a change in one place plus a new
format version.

The names below are loaded on first use (PEP 562), not when the package is imported:
every ``confide.crypto.*`` module import runs this file first, and a command that only
signs a request (or reads a wallet's address) should not load the volume ciphers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "lp": "encoding",
    "derive_subkey": "kdf",
    "SymmetricKey": "keys",
    "read_key_file": "keys",
    "write_key_file": "keys",
    "constant_time_equal": "mac",
    "volume_tag": "mac",
    "SEGMENT_OVERHEAD": "segment",
    "SegmentAuthenticationError": "segment",
    "SegmentCipher": "segment",
    "open_manifest": "segment",
    "seal_manifest": "segment",
    "segment_cipher": "segment",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next access is a plain attribute
    return value
