"""Database implementations of the attestation layer's stores, for the sms."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from confide.attestation.nonces import MAX_LIVE_NONCES, NONCE_BYTES, NONCE_TTL_SECONDS, NONCE_USED
from confide.db.direct import DirectStatement
from confide.db.engine import reading
from confide.db.schema import attest_nonces, sim_platforms
from confide.errors import AttestationError

TAKE_BATCH = 64  # nonces used up by one statement at most
SWEEP_EVERY = 64  # challenges issued between two sweeps (expired rows out, cap checked)
_EXPIRED = "nonce expired: ask for a new challenge"

# Built once, values bound at execution; the hot ones run on the driver (confide.db.direct).
_NONCE_INSERT = DirectStatement(insert(attest_nonces), columns=("nonce", "expires_at"))
_NONCE_SWEEP = delete(attest_nonces).where(attest_nonces.c.expires_at <= bindparam("now"))
_NONCE_PEEK = DirectStatement(
    select(attest_nonces.c.expires_at).where(attest_nonces.c.nonce == bindparam("nonce"))
)
_NONCE_TAKE = DirectStatement(
    delete(attest_nonces)
    .where(attest_nonces.c.nonce == bindparam("nonce"))
    .returning(attest_nonces.c.expires_at)
)
_PLATFORM_OWNER = select(sim_platforms.c.owner).where(
    sim_platforms.c.platform_key == bindparam("key")
)
_PLATFORM_INSERT = insert(sim_platforms)


class DatabaseNonceStore:
    """Attestation nonces as rows: single use (consumed by one DELETE), expiring, shared
    by every replica of the sms.

    The table is bounded: a sweep deletes the expired rows and refuses new challenges
    while ``limit`` are live. It runs on every challenge while the table is full, and
    otherwise once per ``sweep_every`` challenges of this process (at most 1 % of
    ``limit``: every challenge for a small limit), so the table holds at most
    ``limit + sweep_every`` rows per sms process (plus challenges being issued at that
    very moment): 100,064 with the defaults and one process.
    """

    def __init__(
        self,
        engine: Engine,
        ttl: int = NONCE_TTL_SECONDS,
        limit: int = MAX_LIVE_NONCES,
        sweep_every: int = SWEEP_EVERY,
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._limit = limit
        self._sweep_every = max(1, min(sweep_every, limit // 100))
        self._credit = 0  # challenges this process may still issue before the next sweep
        self._credit_lock = threading.Lock()
        self._full = select(attest_nonces.c.expires_at).offset(limit - 1).limit(1)

    def issue(self, now: float) -> bytes:
        """A new nonce; refused while ``limit`` are live (the endpoint is public, so the
        table must not grow without bound). Expired rows go through an index."""
        nonce = os.urandom(NONCE_BYTES)
        with self._credit_lock:
            sweep = self._credit <= 0
            self._credit -= 1
        with self._engine.begin() as connection:
            if sweep:
                connection.execute(_NONCE_SWEEP, {"now": now})
                if connection.execute(self._full).first() is not None:
                    raise AttestationError(
                        f"too many outstanding attestation challenges ({self._limit}): retry later"
                    )
            _NONCE_INSERT.execute(connection, {"nonce": nonce, "expires_at": int(now) + self._ttl})
        if sweep:  # passed: the next sweep_every - 1 challenges need none
            with self._credit_lock:
                self._credit = self._sweep_every - 1
        return nonce

    def consume(self, nonce: bytes, now: float) -> None:
        """Use ``nonce`` up in a transaction of its own (AttestationError if it cannot be)."""
        check_length(nonce)
        with self._engine.begin() as connection:
            _require_live(_NONCE_TAKE.first(connection, {"nonce": nonce}), now)

    @staticmethod
    def peek(connection: Connection, nonce: bytes, now: float) -> None:
        """AttestationError unless ``nonce`` is live at ``now``; uses nothing up (a read)."""
        check_length(nonce)
        _require_live(_NONCE_PEEK.first(connection, {"nonce": nonce}), now)

    @staticmethod
    def expiry_column(parameter: str = "nonce") -> Any:
        """For a read that checks a nonce with others: a column of the expiry of the nonce
        bound as ``parameter`` (NULL if there is none), named ``nonce_expires``. The row's
        value goes to :meth:`require_live`."""
        return (
            select(attest_nonces.c.expires_at)
            .where(attest_nonces.c.nonce == bindparam(parameter))
            .scalar_subquery()
            .label("nonce_expires")
        )

    @staticmethod
    def require_live(expires_at: int | None, now: float) -> None:
        """:meth:`peek`'s verdict on an expiry read by :meth:`expiry_column`."""
        if expires_at is None:
            raise AttestationError(NONCE_USED)
        if now >= expires_at:
            raise AttestationError(_EXPIRED)

    @staticmethod
    def take_many(connection: Connection, nonces: Sequence[bytes]) -> dict[bytes, int]:
        """Use ``nonces`` up in the caller's transaction, in one ``DELETE … RETURNING`` per
        TAKE_BATCH of them: each nonce that was there, with its expiry (each caller checks
        its own clock against it). Like :meth:`take`, of two transactions taking a nonce
        only one finds it."""
        wanted = list(dict.fromkeys(nonces))
        found: dict[bytes, int] = {}
        for start in range(0, len(wanted), TAKE_BATCH):
            chunk = wanted[start : start + TAKE_BATCH]
            params = {f"nonce_{i}": nonce for i, nonce in enumerate(chunk)}
            for row in _nonces_take(len(chunk)).all(connection, params):
                found[bytes(row.nonce)] = int(row.expires_at)
        return found

    @staticmethod
    def take(connection: Connection, nonce: bytes, now: float) -> bool:
        """Use ``nonce`` up in the caller's transaction; True if it was live at ``now``.

        One ``DELETE … RETURNING``: of two transactions taking the same nonce only one
        gets True (on PostgreSQL the second waits for the first to end, then finds the
        row gone). On False the caller must roll its transaction back.
        """
        row = _NONCE_TAKE.first(connection, {"nonce": nonce})
        return row is not None and now < row.expires_at


@lru_cache(maxsize=TAKE_BATCH)
def _nonces_take(count: int) -> DirectStatement:
    return DirectStatement(
        delete(attest_nonces)
        .where(attest_nonces.c.nonce.in_([bindparam(f"nonce_{i}") for i in range(count)]))
        .returning(attest_nonces.c.nonce, attest_nonces.c.expires_at)
    )


def _require_live(row: Any, now: float) -> None:
    """AttestationError unless the nonce's row was found and has not expired at ``now``."""
    DatabaseNonceStore.require_live(None if row is None else row.expires_at, now)


def check_length(nonce: bytes) -> None:
    """AttestationError unless ``nonce`` has a nonce's length (checked before it is bound)."""
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise AttestationError(f"a nonce is {NONCE_BYTES} bytes")


class DatabasePlatformRegistry:
    """Sim platform keys that wallets registered; the sim verifier accepts only these.

    A key, once registered, is never deleted nor given to another wallet (nothing in the
    sms updates or deletes the table), so each instance remembers the owners it found
    (up to ``cache_size`` keys); a key not found is looked up again every time.
    """

    def __init__(self, engine: Engine, cache_size: int = 4096) -> None:
        self._engine = engine
        self._owners: dict[bytes, str] = {}
        self._cache_size = cache_size

    def register(self, platform_key: bytes, owner: str, now: int) -> bool:
        """Record the key; False if it was already registered."""
        if len(platform_key) != 32:
            raise AttestationError("a platform key is a 32-byte Ed25519 public key")
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    _PLATFORM_INSERT,
                    {"platform_key": platform_key, "owner": owner, "registered_at": now},
                )
        except IntegrityError:
            return False
        return True

    def owner(self, platform_key: bytes) -> str | None:
        """The wallet that registered the key, or None."""
        known = self._owners.get(platform_key)
        if known is not None:
            return known
        with reading(self._engine) as connection:
            found = connection.execute(_PLATFORM_OWNER, {"key": platform_key}).first()
        if found is None:
            return None
        if len(self._owners) >= self._cache_size:
            self._owners.clear()
        self._owners[bytes(platform_key)] = str(found.owner)
        return str(found.owner)

    def is_registered(self, platform_key: bytes) -> bool:
        return self.owner(platform_key) is not None
