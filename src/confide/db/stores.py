"""Database implementations of the attestation layer's stores, for the sms."""

from __future__ import annotations

import os

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from confide.attestation.nonces import MAX_LIVE_NONCES, NONCE_BYTES, NONCE_TTL_SECONDS
from confide.db.engine import reading
from confide.db.schema import attest_nonces, sim_platforms
from confide.errors import AttestationError


class DatabaseNonceStore:
    """Attestation nonces as rows: single use (consumed by one DELETE), expiring, shared
    by every replica of the sms."""

    def __init__(
        self, engine: Engine, ttl: int = NONCE_TTL_SECONDS, limit: int = MAX_LIVE_NONCES
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._limit = limit

    def issue(self, now: float) -> bytes:
        """A new nonce; refused while ``limit`` are live (the endpoint is public, so the
        table must not grow without bound). Expired rows go through an index."""
        nonce = os.urandom(NONCE_BYTES)
        with self._engine.begin() as connection:
            connection.execute(delete(attest_nonces).where(attest_nonces.c.expires_at <= now))
            full = connection.execute(
                select(attest_nonces.c.expires_at).offset(self._limit - 1).limit(1)
            ).first()
            if full is not None:
                raise AttestationError(
                    f"too many outstanding attestation challenges ({self._limit}): retry later"
                )
            connection.execute(
                insert(attest_nonces).values(nonce=nonce, expires_at=int(now) + self._ttl)
            )
        return nonce

    def consume(self, nonce: bytes, now: float) -> None:
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise AttestationError(f"a nonce is {NONCE_BYTES} bytes")
        with self._engine.begin() as connection:
            row = connection.execute(
                delete(attest_nonces)
                .where(attest_nonces.c.nonce == nonce)
                .returning(attest_nonces.c.expires_at)
            ).first()
        if row is None:
            raise AttestationError("nonce unknown or already used (replayed evidence?)")
        if now >= row.expires_at:
            raise AttestationError("nonce expired: ask for a new challenge")


class DatabasePlatformRegistry:
    """Sim platform keys that wallets registered; the sim verifier accepts only these."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def register(self, platform_key: bytes, owner: str, now: int) -> bool:
        """Record the key; False if it was already registered."""
        if len(platform_key) != 32:
            raise AttestationError("a platform key is a 32-byte Ed25519 public key")
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(sim_platforms).values(
                        platform_key=platform_key, owner=owner, registered_at=now
                    )
                )
        except IntegrityError:
            return False
        return True

    def owner(self, platform_key: bytes) -> str | None:
        """The wallet that registered the key, or None."""
        with reading(self._engine) as connection:
            found = connection.execute(
                select(sim_platforms.c.owner).where(sim_platforms.c.platform_key == platform_key)
            ).first()
        return None if found is None else str(found.owner)

    def is_registered(self, platform_key: bytes) -> bool:
        return self.owner(platform_key) is not None
