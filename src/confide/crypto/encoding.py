"""Unambiguous byte encodings for values that are hashed, signed or used as KDF input."""

import struct


def lp(data: bytes) -> bytes:
    """Length-prefix ``data``: a 4-byte big-endian length, then the bytes.

    Concatenating length-prefixed fields can never make two different field lists
    produce the same byte string, which plain concatenation can.
    """
    if len(data) > 0xFFFFFFFF:
        raise ValueError("field longer than 4 GiB cannot be length-prefixed")
    return struct.pack(">I", len(data)) + data


def u16(value: int) -> bytes:
    """Encode ``value`` as a 2-byte big-endian unsigned integer."""
    return struct.pack(">H", value)
