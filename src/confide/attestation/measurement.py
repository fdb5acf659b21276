"""Typed measurements: ``sim:<sha256>``, ``sgx:<MRENCLAVE>``, ``tdx:<MRTD>``.

A measurement always carries its TEE type, so a value can never be checked by the wrong
kind of verifier, and a bare hex value (which would be ambiguous) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from confide.errors import AttestationError

TEE_TYPES = ("sim", "sgx", "tdx")
HARDWARE_TEES = frozenset({"sgx", "tdx"})
_HEX_CHARS = {"sim": 64, "sgx": 64, "tdx": 96}
_WHAT = {"sim": "SHA-256 of the app bundle", "sgx": "MRENCLAVE", "tdx": "MRTD"}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, order=True)
class Measurement:
    tee: str
    value: str  # lower-case hex

    @classmethod
    def parse(cls, text: str) -> Measurement:
        tee, sep, value = text.strip().partition(":")
        tee = tee.lower()
        if not sep or tee not in _HEX_CHARS:
            raise AttestationError(
                f"measurement {text!r} is not typed: write it as "
                + ", ".join(f"{t}:<{_HEX_CHARS[t]} hex> ({_WHAT[t]})" for t in TEE_TYPES)
            )
        value = value.lower()
        if len(value) != _HEX_CHARS[tee] or not _HEX.fullmatch(value):
            raise AttestationError(
                f"measurement {text!r}: a {tee} measurement is {_HEX_CHARS[tee]} hex "
                f"characters ({_WHAT[tee]})"
            )
        return cls(tee, value)

    @classmethod
    def of(cls, tee: str, raw: bytes) -> Measurement:
        return cls.parse(f"{tee}:{raw.hex()}")

    def short(self) -> str:
        """``sgx:33d8…fbb``: enough to recognise it in a message."""
        return f"{self.tee}:{self.value[:4]}…{self.value[-3:]}"

    def __str__(self) -> str:
        return f"{self.tee}:{self.value}"
