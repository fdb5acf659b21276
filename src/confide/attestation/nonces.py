"""Attestation nonces: issued by the verifier side, single use, short-lived."""

from __future__ import annotations

import os
import threading
from typing import Protocol

from confide.errors import AttestationError

NONCE_BYTES = 32
NONCE_TTL_SECONDS = 60


class NonceStore(Protocol):
    """Where issued nonces live until used; the sms keeps them as database rows."""

    def issue(self, now: float) -> bytes: ...

    def consume(self, nonce: bytes, now: float) -> None:
        """Use ``nonce`` up, atomically; raise AttestationError if it cannot be used."""
        ...


class MemoryNonceStore:
    """An in-process nonce store (one process, tests, the offline tools)."""

    def __init__(self, ttl: float = NONCE_TTL_SECONDS) -> None:
        self._ttl = ttl
        self._expiry: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def issue(self, now: float) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        with self._lock:
            self._expiry = {n: t for n, t in self._expiry.items() if t > now}
            self._expiry[nonce] = now + self._ttl
        return nonce

    def consume(self, nonce: bytes, now: float) -> None:
        with self._lock:
            expiry = self._expiry.pop(nonce, None)
        if expiry is None:
            raise AttestationError("nonce unknown or already used (replayed evidence?)")
        if now >= expiry:
            raise AttestationError("nonce expired: ask for a new challenge")
