"""The audit log: every secret write, session change, attestation, release and tag update.

Each entry is one row with a gapless sequence number and
``hash = SHA-256(prev_hash || canonical entry)``; the first entry's ``prev_hash`` is 64
zeros. Appends are serialised (a PostgreSQL advisory lock, SQLite's write lock), and should two
writers ever read the same head, both try to insert the same ``seq`` and ``prev_hash``:
the UNIQUE constraints let one win, and the loser retries on the new head. Entries never
hold a secret value (the caller passes names, versions, reasons).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from confide.db.schema import audit_log
from confide.errors import ConfideError

GENESIS = "0" * 64
_RETRIES = 20
_LOCK_KEY = 0x636F6E666964  # "confid": the audit log's advisory lock


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    prev_hash: str
    hash: str
    at: int
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


def entry_hash(prev_hash: str, seq: int, at: int, actor: str, action: str, subject: str,
               detail: dict[str, Any]) -> str:  # fmt: skip
    canonical = json.dumps(
        {"seq": seq, "at": at, "actor": actor, "action": action, "subject": subject,
         "detail": detail},
        sort_keys=True, separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical.encode()).hexdigest()


def append(
    connection: Connection, *, at: int, actor: str, action: str, subject: str,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:  # fmt: skip
    """Append one entry in the caller's transaction (a collision raises IntegrityError)."""
    detail = detail or {}
    if connection.dialect.name == "postgresql":
        # Writers queue on a transaction-scoped lock instead of colliding and retrying;
        # SQLite's BEGIN IMMEDIATE already serialises writers.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    head = connection.execute(
        select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
    ).first()
    seq, prev = (0, GENESIS) if head is None else (int(head.seq) + 1, str(head.hash))
    digest = entry_hash(prev, seq, at, actor, action, subject, detail)
    connection.execute(
        insert(audit_log).values(
            seq=seq, prev_hash=prev, hash=digest, at=at, actor=actor, action=action,
            subject=subject, detail=json.dumps(detail, sort_keys=True),
        )
    )  # fmt: skip
    return AuditEntry(seq, prev, digest, at, actor, action, subject, detail)


def append_now(engine: Engine, **fields: Any) -> AuditEntry:
    """Append in a transaction of its own, retrying when another writer took the head."""
    for _ in range(_RETRIES):
        try:
            with engine.begin() as connection:
                return append(connection, **fields)
        except (IntegrityError, OperationalError):
            continue
    raise ConfideError("the audit log is too busy: try again")


def entries(connection: Connection, since: int = 0) -> list[AuditEntry]:
    rows = connection.execute(
        select(audit_log).where(audit_log.c.seq >= since).order_by(audit_log.c.seq)
    )
    return [
        AuditEntry(
            int(r.seq),
            r.prev_hash,
            r.hash,
            int(r.at),
            r.actor,
            r.action,
            r.subject,
            json.loads(r.detail),
        )
        for r in rows
    ]


def verify_chain(connection: Connection) -> int:
    """Recompute the whole chain; return the number of entries or raise naming the break."""
    previous = GENESIS
    count = 0
    for expected_seq, entry in enumerate(entries(connection)):
        if entry.seq != expected_seq:
            raise ConfideError(f"audit log has a gap: entry {expected_seq} is missing")
        if entry.prev_hash != previous:
            raise ConfideError(f"audit log entry {entry.seq} does not follow entry {entry.seq - 1}")
        recomputed = entry_hash(entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action,
                                entry.subject, entry.detail)  # fmt: skip
        if recomputed != entry.hash:
            raise ConfideError(f"audit log entry {entry.seq} was altered")
        previous = entry.hash
        count += 1
    return count
