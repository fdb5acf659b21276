"""Attestation nonces: issued by the verifier side, single use, short-lived."""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Protocol

from confide.errors import AttestationError

NONCE_BYTES = 32
NONCE_TTL_SECONDS = 60
NONCE_USED = "nonce unknown or already used (replayed evidence?)"  # every store says this


class NonceStore(Protocol):
    """Where issued nonces live until used; the sms keeps them as database rows."""

    def issue(self, now: float) -> bytes: ...

    def consume(self, nonce: bytes, now: float) -> None:
        """Use ``nonce`` up, atomically; raise AttestationError if it cannot be used."""
        ...


MAX_LIVE_NONCES = 100_000


class MemoryNonceStore:
    """An in-process nonce store (one process, tests, the offline tools).

    Nonces expire in issue order, so pruning is amortised O(1); at most
    ``MAX_LIVE_NONCES`` may be outstanding, so a client asking for challenges in a loop
    exhausts its own luck, not the memory.
    """

    def __init__(self, ttl: float = NONCE_TTL_SECONDS, limit: int = MAX_LIVE_NONCES) -> None:
        self._ttl = ttl
        self._limit = limit
        self._expiry: dict[bytes, float] = {}
        self._order: deque[tuple[float, bytes]] = deque()
        self._lock = threading.Lock()

    def issue(self, now: float) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        with self._lock:
            self._prune(now)
            if len(self._expiry) >= self._limit:
                raise AttestationError("too many outstanding challenges: try again shortly")
            self._expiry[nonce] = now + self._ttl
            self._order.append((now + self._ttl, nonce))
        return nonce

    def consume(self, nonce: bytes, now: float) -> None:
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise AttestationError(f"a nonce is {NONCE_BYTES} bytes")
        with self._lock:
            expiry = self._expiry.pop(nonce, None)
        if expiry is None:
            raise AttestationError(NONCE_USED)
        if now >= expiry:
            raise AttestationError("nonce expired: ask for a new challenge")

    def _prune(self, now: float) -> None:
        while self._order and self._order[0][0] <= now:
            _, old = self._order.popleft()
            self._expiry.pop(old, None)
