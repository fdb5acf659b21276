"""Replay protection: each (address, nonce) is accepted once, in the request's transaction."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert
from sqlalchemy.exc import IntegrityError

from confide.crypto.requests import WINDOW_SECONDS, SignedBy
from confide.db.direct import DirectStatement
from confide.db.schema import request_nonces
from confide.errors import AuthError

# 900 s. A request's timestamp is accepted within WINDOW_SECONDS of the clock of the
# replica that receives it, so it may arrive WINDOW_SECONDS before its timestamp and be
# replayed until WINDOW_SECONDS after it: 2 * WINDOW_SECONDS after its arrival, with no
# margin. The third window covers replicas whose clocks differ (a record pruned by one
# clock, a replay timed by another) and a prune racing a request's check.
KEEP_SECONDS = 3 * WINDOW_SECONDS
# Built once, run on the driver (confide.db.direct): every signed request makes one.
_INSERT = DirectStatement(insert(request_nonces), columns=("address", "nonce", "seen_at"))


def record_request(connection: Connection, signed: SignedBy, now: int) -> None:
    """Record the request's nonce in the caller's transaction; AuthError on a replay.

    The UNIQUE constraint does the work, so two replicas racing with the same request
    cannot both succeed, and a restart does not forget. On a replay the caller's
    transaction must roll back, which it does when this exception leaves its block: on
    PostgreSQL the failed insert has made the transaction unusable anyway. (No savepoint
    around the insert: no caller goes on after a replay, and SAVEPOINT plus RELEASE were
    two more statements, compiled afresh each time, in every signed write.)
    """
    try:
        _INSERT.execute(
            connection, {"address": signed.address, "nonce": signed.nonce, "seen_at": now}
        )
    except IntegrityError:
        raise AuthError(
            f"request replayed: nonce {signed.nonce} from {signed.address} was already used"
        ) from None


def prune_request_nonces(connection: Connection, now: int) -> int:
    """Forget nonces older than any request that could still carry them; rows removed."""
    result = connection.execute(
        delete(request_nonces).where(request_nonces.c.seen_at < now - KEEP_SECONDS)
    )
    return int(result.rowcount or 0)
