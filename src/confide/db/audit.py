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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Label, insert, select, text
from sqlalchemy.exc import IntegrityError

from confide.db.direct import DirectStatement, InsertRows
from confide.db.schema import audit_log
from confide.errors import ConfideError

GENESIS = "0" * 64
_RETRIES = 20
_LOCK_KEY = 0x636F6E666964  # "confid": the audit log's advisory lock
_LOCKED = "confide_audit_locked"  # in connection.info: the transaction that holds it
# Built once (values as bound parameters): SQLAlchemy reuses their compiled form without
# rebuilding and hashing a new statement per append (see confide.sms.secrets).
_LOCK = DirectStatement(text("SELECT pg_advisory_xact_lock(:key)"))
_HEAD = DirectStatement(
    select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
)
_COLUMNS = ("seq", "prev_hash", "hash", "at", "actor", "action", "subject", "detail")
_INSERT = DirectStatement(insert(audit_log), columns=_COLUMNS)
_INSERT_ROWS = InsertRows(audit_log, _COLUMNS)


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


def entry_hash(
    prev_hash: str, seq: int, at: int, actor: str, action: str, subject: str, detail: dict[str, Any]
) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Head:
    """The log's last entry as read in a transaction (both None: the log is empty)."""

    seq: int | None
    hash: str | None


def head_columns() -> list[Label[Any]]:
    """The head as two columns, ``audit_seq`` and ``audit_hash`` (NULL when the log is
    empty), for a statement that reads it with other things. Read them after
    :func:`lock`, and give them to :func:`append` as ``head`` with no entry written in
    between: the statement saved is one round trip of the writers' queue."""
    last = select(audit_log.c.seq).order_by(audit_log.c.seq.desc()).limit(1)
    return [
        last.scalar_subquery().label("audit_seq"),
        last.with_only_columns(audit_log.c.hash).scalar_subquery().label("audit_hash"),
    ]


def append(
    connection: Connection,
    *,
    at: int,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any] | None = None,
    head: Head | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (a collision raises IntegrityError).

    ``head``: the head the caller read after :func:`lock` in this transaction (see
    :func:`head_columns`); without it, the lock is taken and the head read here.
    """
    entry, row = _entry(connection, head, at, actor, action, subject, detail or {})
    _INSERT.execute(connection, row)
    return entry


class Appender:
    """Entries appended in one transaction, chained in memory and inserted together by
    :meth:`flush` (one multi-row INSERT): what a batch of grants writes.

    Only for a transaction that holds :func:`lock` from its start, so nothing else
    appends in between. Before any other writer in the transaction appends (a secret
    written with :func:`append`), :meth:`flush` and :meth:`forget_head`.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._last: Head | None = None
        self._rows: list[dict[str, Any]] = []

    def append(
        self,
        *,
        at: int,
        actor: str,
        action: str,
        subject: str,
        detail: dict[str, Any] | None = None,
        head: Head | None = None,
    ) -> AuditEntry:
        """As :func:`append`; ``head`` is used only for the first entry (later ones
        follow the entry before them)."""
        entry, row = _entry(
            self._connection, self._last or head, at, actor, action, subject, detail or {}
        )
        self._rows.append(row)
        self._last = Head(entry.seq, entry.hash)
        return entry

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        _INSERT_ROWS.execute(self._connection, rows)

    def forget_head(self) -> None:
        """Another writer appends next: the entry after it reads the head again."""
        self.flush()
        self._last = None


def _entry(
    connection: Connection,
    head: Head | None,
    at: int,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any],
) -> tuple[AuditEntry, dict[str, Any]]:
    """The entry that follows ``head`` (read under the lock when None), and its row."""
    if head is None:
        lock(connection)
        row = _HEAD.first(connection, {})
        head = Head(None, None) if row is None else Head(int(row.seq), str(row.hash))
    if head.seq is None or head.hash is None:
        seq, prev = 0, GENESIS
    else:
        seq, prev = head.seq + 1, head.hash
    digest = entry_hash(prev, seq, at, actor, action, subject, detail)
    entry = AuditEntry(seq, prev, digest, at, actor, action, subject, detail)
    return entry, {
        "seq": seq,
        "prev_hash": prev,
        "hash": digest,
        "at": at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": json.dumps(detail, sort_keys=True),
    }


def lock(connection: Connection) -> None:
    """Queue behind every other writer of the log, until the caller's transaction ends.

    On PostgreSQL a transaction-scoped advisory lock (taken again by :func:`append`, which
    a holder passes at once), so writers queue instead of colliding and retrying; SQLite's
    ``BEGIN IMMEDIATE`` already serialises writers. Taken early, it also orders what the
    transaction reads next after the commits of the writers ahead of it.
    """
    if connection.dialect.name != "postgresql":
        return
    transaction = connection.get_transaction()
    if transaction is not None and connection.info.get(_LOCKED) is transaction:
        return  # held until this transaction ends: no second round trip
    _LOCK.execute(connection, {"key": _LOCK_KEY})
    connection.info[_LOCKED] = connection.get_transaction()


def append_now(
    engine: Engine, also: Callable[[Connection], None] | None = None, **fields: Any
) -> AuditEntry:
    """Append in a transaction of its own, retrying when another writer took the head.

    ``also`` runs first in that transaction (what the entry records: its exceptions roll
    the whole transaction back and go up). A database that is locked or unreachable is
    not retried here (each try would wait the busy timeout): its error goes up, and the
    HTTP layer answers 503.
    """
    for _ in range(_RETRIES):
        try:
            with engine.begin() as connection:
                if also is not None:
                    also(connection)
                return append(connection, **fields)
        except IntegrityError:
            continue
    raise ConfideError("the audit log is too busy: try again")


def entries(connection: Connection, since: int = 0, limit: int | None = None) -> list[AuditEntry]:
    """Entries from ``since`` on, oldest first (at most ``limit``)."""
    return list(_iter_entries(connection, since, limit))


def _iter_entries(
    connection: Connection, since: int = 0, limit: int | None = None
) -> Iterator[AuditEntry]:
    query = select(audit_log).where(audit_log.c.seq >= since).order_by(audit_log.c.seq)
    for r in connection.execute(query if limit is None else query.limit(limit)):
        yield AuditEntry(
            int(r.seq),
            r.prev_hash,
            r.hash,
            int(r.at),
            r.actor,
            r.action,
            r.subject,
            json.loads(r.detail),
        )


@dataclass(frozen=True)
class ChainReport:
    """What :func:`check_chain` found: the rows present, the last one, the first break."""

    entries: int
    head: AuditEntry | None
    error: str | None  # None: the chain holds (and the expected entry, if any, is there)


def check_chain(connection: Connection, expect: tuple[int, str] | None = None) -> ChainReport:
    """Recompute the whole chain and report the first break, naming its entry.

    ``expect`` = (seq, hash) written down earlier: entry ``seq`` must still exist with that
    hash. The chain alone cannot tell that its last entries were removed (what is left is
    a valid chain) or that the whole log was rewritten from some entry on; a head noted
    down outside the database can.
    """
    previous, count, head, error = GENESIS, 0, None, None
    expected_hash: str | None = None
    for expected_seq, entry in enumerate(_iter_entries(connection)):
        count, head = count + 1, entry
        if error is not None:
            continue  # keep counting: the report names the head as stored
        if entry.seq != expected_seq:
            error = (
                f"audit log entry {expected_seq} is missing (a gap: the next entry is {entry.seq})"
            )
        elif entry.prev_hash != previous:
            error = f"audit log entry {entry.seq} does not follow entry {entry.seq - 1}"
        elif (
            entry_hash(
                entry.prev_hash,
                entry.seq,
                entry.at,
                entry.actor,
                entry.action,
                entry.subject,
                entry.detail,
            )
            != entry.hash
        ):
            error = f"audit log entry {entry.seq} was altered (its hash does not match it)"
        if expect is not None and entry.seq == expect[0]:
            expected_hash = entry.hash
        previous = entry.hash
    if error is None and expect is not None:
        error = _expectation(expect, expected_hash, head)
    return ChainReport(count, head, error)


def _expectation(expect: tuple[int, str], found: str | None, head: AuditEntry | None) -> str | None:
    seq, wanted = expect
    if found is None:
        end = "the log is empty" if head is None else f"the log ends at entry {head.seq}"
        return (
            f"audit log entry {seq} is missing: {end} (entries removed from the end "
            f"since {seq}:{wanted[:12]}… was written down)"
        )
    if found != wanted.lower():
        return (
            f"audit log entry {seq} has hash {found[:12]}…, not the expected "
            f"{wanted[:12]}… (the log was rewritten since it was written down)"
        )
    return None


def verify_chain(connection: Connection) -> int:
    """Recompute the whole chain; return the number of entries or raise naming the break."""
    report = check_chain(connection)
    if report.error is not None:
        raise ConfideError(report.error)
    return report.entries
