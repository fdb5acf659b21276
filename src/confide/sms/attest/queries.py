"""Every statement the attestation path runs, by shape: the plan's one read, the volume
tags, the grant's recheck and its inserts.

Each is built once per shape (how many secrets, how many volumes), its values bound at
execution, and run on the driver (:mod:`confide.db.direct`). An attestation of a session
with up to :data:`BATCH` secrets and volumes costs one statement to plan (its nonce, tags
and secrets together) and, in the grant's transaction, one to recheck what the plan read
(with the audit log's head) besides the shared nonce ``DELETE`` and the batch's inserts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, select, true

from confide.db import audit
from confide.db.direct import DirectStatement, InsertRows
from confide.db.schema import attestations, task_cancels, task_releases, volume_tags
from confide.db.stores import DatabaseNonceStore
from confide.sms.attest.request import SessionTarget, TaskTarget
from confide.sms.secret_queries import (
    BATCH,
    Named,
    batch_params,
    batches,
    latest_rows,
    version_columns,
)
from confide.sms.sessions import successor_exists


def current_tags(
    owner: str, session: str, volumes: Sequence[str], connection: Connection
) -> dict[str, str | None]:
    """Each volume's current tag (None before the first): one statement per BATCH
    volumes, each column an indexed ``ORDER BY seq DESC LIMIT 1`` read."""
    tags: dict[str, str | None] = {}
    wanted = list(dict.fromkeys(volumes))
    for chunk in batches(wanted):
        params = {"owner": owner, "session": session}
        params.update({f"volume_{i}": volume for i, volume in enumerate(chunk)})
        row = _tags_of(len(chunk)).first(connection, params)
        tags.update(
            {
                volume: None if tag is None else str(tag)
                for volume, tag in zip(chunk, row, strict=True)
            }
        )
    return tags


def plan_read(
    connection: Connection,
    owner: str,
    session: str,
    nonce: bytes,
    volumes: Sequence[str],
    refs: Sequence[Named],
) -> list[Any]:
    """A session attestation's one read (at most BATCH ``volumes`` and ``refs``): on every
    row the volumes' tags (columns ``t0``, …) and the nonce's expiry (``nonce_expires``),
    each row joined to the current row of one of ``refs`` that exists (a single row, its
    secret columns NULL, if none does)."""
    params: dict[str, Any] = {"owner": owner, "session": session, "nonce": nonce}
    params.update({f"volume_{i}": volume for i, volume in enumerate(volumes)})
    params.update(batch_params(refs))
    rows: list[Any] = _plan_read_of(len(refs), len(volumes)).all(connection, params)
    return rows


@dataclass(frozen=True)
class RecheckReads:
    versions: list[int | None]  # each secret's current version (None: gone)
    superseded: bool  # a session: its version has a successor
    released: bool  # a task: this lease was released already
    head: audit.Head
    releases: int = 0  # a task: its releases so far (all leases)
    cancelled: bool = False  # a task: its requester cancelled it


@dataclass(frozen=True)
class TaskState:
    releases: int  # the task's releases so far, all leases
    cancelled: bool  # its requester cancelled it (POST /v1/task-cancels)


def task_state(connection: Connection, task_id: str) -> TaskState:
    """What this sms recorded of a task: its releases, and a cancel (one statement)."""
    row = _TASK_STATE.first(connection, {"task_id": task_id})
    return TaskState(int(row.releases), bool(row.cancelled))


def _task_columns() -> list[Any]:
    """A task's releases (all leases) and whether it was cancelled, by ``task_id``."""
    return [
        select(func.count())
        .select_from(task_releases)
        .where(task_releases.c.task_id == bindparam("task_id"))
        .scalar_subquery()
        .label("releases"),
        exists().where(task_cancels.c.task_id == bindparam("task_id")).label("cancelled"),
    ]


_TASK_STATE = DirectStatement(select(*_task_columns()))


def recheck_reads(
    connection: Connection, refs: Sequence[Named], target: SessionTarget | TaskTarget
) -> RecheckReads:
    """The current version of each of ``refs``; for a session, whether its version has a
    successor; for a task, whether its lease has been released already, its releases
    and whether it was cancelled; and the audit log's head: one statement per BATCH
    references (the first also reads the rest)."""
    chunks = batches(refs) or [[]]
    versions: list[int | None] = []
    superseded, released, head = False, False, audit.Head(None, None)
    releases, cancelled = 0, False
    kind = "session" if isinstance(target, SessionTarget) else "task"
    for n, chunk in enumerate(chunks):
        first = n == 0
        params: dict[str, str] = batch_params(chunk)
        if first and isinstance(target, SessionTarget):
            params.update(owner=target.owner, name=target.name, hash=target.hash)
        elif first and isinstance(target, TaskTarget):
            params.update(task_id=target.task_id, lease_token=target.lease_token)
        row = _recheck_of(len(chunk), kind if first else "").first(connection, params)
        versions += [None if v is None else int(v) for v in row[: len(chunk)]]
        if first:
            head = audit.Head(row.audit_seq, row.audit_hash)
            superseded = kind == "session" and bool(row.superseded)
            if kind == "task":
                released, cancelled = bool(row.released), bool(row.cancelled)
                releases = int(row.releases)
    return RecheckReads(versions, superseded, released, head, releases, cancelled)


def _tag_columns(count: int, nonce: bool) -> list[Any]:
    """``count`` volumes' current tags, one column each (``t0``, …), and with ``nonce``
    a last column for the expiry of the nonce bound as ``nonce``."""
    columns: list[Any] = [
        select(volume_tags.c.tag)
        .where(
            volume_tags.c.owner == bindparam("owner"),
            volume_tags.c.session == bindparam("session"),
            volume_tags.c.volume == bindparam(f"volume_{i}"),
        )
        .order_by(volume_tags.c.seq.desc())
        .limit(1)
        .scalar_subquery()
        .label(f"t{i}")
        for i in range(count)
    ]
    if nonce:
        columns.append(DatabaseNonceStore.expiry_column())
    return columns


@lru_cache(maxsize=BATCH)
def _tags_of(count: int) -> DirectStatement:
    return DirectStatement(select(*_tag_columns(count, nonce=False)))


@lru_cache(maxsize=4 * BATCH)
def _plan_read_of(refs: int, volumes: int) -> DirectStatement:
    """The statement of :func:`plan_read`."""
    reads = select(*_tag_columns(volumes, nonce=True)).subquery("r")
    if refs == 0:
        return DirectStatement(select(reads))
    found = latest_rows(refs).subquery("s")
    return DirectStatement(select(reads, found).select_from(reads.outerjoin(found, true())))


@lru_cache(maxsize=3 * BATCH)
def _recheck_of(count: int, first: str) -> DirectStatement:
    """``count`` secrets' current versions; ``first`` ("session", "task" or ""): the
    first statement of a recheck also reads the session's successor or the task's
    release, and the audit log's head."""
    columns: list[Any] = version_columns(count)
    if first == "session":
        columns.append(successor_exists().label("superseded"))
    if first == "task":
        columns.append(
            exists()
            .where(
                task_releases.c.task_id == bindparam("task_id"),
                task_releases.c.lease_token == bindparam("lease_token"),
            )
            .label("released")
        )
        columns += _task_columns()
    if first:
        columns += audit.head_columns()
    return DirectStatement(select(*columns))


INSERT_ATTESTATIONS = InsertRows(
    attestations,
    ("jti", "ed25519_public", "subject", "scope", "service", "worker", "expires_at", "created_at"),
)
INSERT_RELEASES = InsertRows(
    task_releases, ("task_id", "lease_token", "jti", "worker", "released_at")
)
