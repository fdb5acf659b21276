"""The hub core: configuration, identity, records and tasks, without HTTP.

Each write runs in one transaction, with ``before`` (the signed request's nonce record)
first in it and its audit entry last, so the request, its effect and its entry commit
together or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from confide import __version__
from confide.crypto.info_proof import request_audience
from confide.crypto.tokens import public_jwk
from confide.db import audit
from confide.db.engine import make_engine, reading, upgrade
from confide.db.identity import load_identity
from confide.errors import ConfideError, TaskError
from confide.grants import MAX_GRANT_SECONDS, Grant, issue_grant
from confide.hub import tasks
from confide.hub.lifecycle import WORKER_CAUSES, check_path
from confide.hub.orders import OrderRefusedError, QueueLimitError, order_problems
from confide.hub.records import RecordStore, UnknownRecordError
from confide.hub.results import UPLOADER, result_blobs
from confide.records import OwnerRecord, SignedRecord
from confide.sms.tasks import TaskOrder

SERVICE = "hub"  # this service's rows in confide.db.identity
Before = Callable[[Connection], None] | None


@dataclass(frozen=True)
class HubConfig:
    home: Path  # $CONFIDE_HOME/hub: the deployment id and signing key files live here
    db_url: str
    deployment_id: str = ""  # "": home/deployment-id, else the database's, else a new one
    sms_url: str | None = None
    storage_url: str | None = None
    lease_seconds: int = 60
    max_queued: int = 100  # live tasks per requester
    signing_key_file: Path | None = None  # None: home/signing-key, made at first start
    embedded: bool = False  # under `confide up`


@dataclass(frozen=True)
class Report:
    """A worker's status report: ``via`` are statuses passed through before ``status``."""

    token: str
    status: str
    cause: str | None = None
    result_digest: str | None = None
    result_blob: str | None = None
    via: tuple[str, ...] = ()
    result: dict[str, Any] | None = None  # checked by confide.hub.results.check_result


@dataclass(frozen=True)
class Claimed:
    view: dict[str, Any]
    lease: tasks.Lease
    grants: dict[str, str | None]


class ClaimForbiddenError(ConfideError):
    """A claim by a wallet that is not a member of the pool (403)."""


class NoResultError(ConfideError):
    """Grants asked for a task that has no result blob yet (409)."""


class Hub:
    """Everything the hub knows and does, callable without a server."""

    def __init__(self, config: HubConfig, engine: Engine | None = None) -> None:
        if config.lease_seconds < 1 or config.max_queued < 1:
            raise ConfideError("the hub's lease seconds and queue limit are positive")
        self.config = config
        self.engine = engine or make_engine(config.db_url)
        upgrade(self.engine)
        # The deployment id and signing key, shared by every hub on this database
        # (confide.db.identity: made at first start, a replica that differs refused).
        deployment, self.signing_key = load_identity(
            self.engine,
            SERVICE,
            config.home,
            deployment_id=config.deployment_id,
            key_file=config.signing_key_file,
        )
        self.config = config = dataclasses.replace(config, deployment_id=deployment)
        self.deployment_id = config.deployment_id
        self.audience = request_audience(
            config.deployment_id, self.signing_key.public_bytes(), service=SERVICE
        )
        self.records = RecordStore(config.deployment_id)
        self._swept_at = 0  # when a claim last swept (the clock's second)

    def info(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "service": SERVICE,
            "version": __version__,
            "deployment_id": self.deployment_id,
            "audience": self.audience,
            "jwks": {"keys": [public_jwk(self.signing_key.public_bytes())]},
            "sms": self.config.sms_url,
            "storage": self.config.storage_url,
        }
        if self.config.embedded:
            document.update(embedded=True, allow_sim=True)
        return document

    # Reads
    def record(self, address: str) -> SignedRecord | None:
        with reading(self.engine) as connection:
            return self.records.signed(connection, address)

    def records_of(self, kind: str, owner: str | None) -> list[SignedRecord]:
        with reading(self.engine) as connection:
            return self.records.listed(connection, kind, owner)

    def task_view(self, task_id: str) -> dict[str, Any] | None:
        with reading(self.engine) as connection:
            found = tasks.row(connection, task_id)
        return None if found is None else tasks.view(found)

    def task_list(self, **filters: Any) -> list[dict[str, Any]]:
        with reading(self.engine) as connection:
            return tasks.listed(connection, **filters)

    # Writes
    def put_record(
        self, signed: SignedRecord, now: int, *, actor: str | None = None, before: Before = None
    ) -> OwnerRecord:
        with self.begin() as connection:
            if before is not None:
                before(connection)
            record = self.records.put(connection, signed, now)
            detail = {"kind": record.kind, "sequence": record.sequence}
            self._audit(
                connection, now, actor or record.owner, "record.put", record.address, detail
            )
        return record

    def queue(
        self,
        order: TaskOrder,
        signature: str,
        now: int,
        *,
        sms_problems: Sequence[str] = (),
        before: Before = None,
        within: Connection | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The task of ``order`` (queued now: True; already queued: False)."""
        task_id = order.task_id()
        with self._transaction(within) as connection:
            if before is not None:
                before(connection)
            existing = tasks.row(connection, task_id)
            if existing is not None:
                return tasks.view(existing), False
            problems = order_problems(order, signature, self.records, connection, now)
            problems += [p for p in sms_problems if p not in problems]
            queued = tasks.queued_count(connection, order.requester)
            if queued >= self.config.max_queued:
                problems.append(
                    f"requester {order.requester} has {queued} tasks queued or running, the "
                    f"most this hub takes (--max-queued {self.config.max_queued})"
                )
                if len(problems) == 1:
                    raise QueueLimitError(problems)
            if problems:
                raise OrderRefusedError(problems)
            view = tasks.queue(connection, order, signature, now)
            detail = {"workerpool": order.workerpool, "app": order.app}
            self._audit(connection, now, order.requester, "task.queue", task_id, detail)
        return view, True

    def claim(
        self,
        pool: str,
        worker: str,
        now: int,
        *,
        before: Before = None,
        within: Connection | None = None,
    ) -> Claimed | None:
        """A queued task of ``pool`` leased to ``worker`` (a member), or None. Due leases
        and deadlines are swept first (at most once a second per process: the periodic
        sweep does the rest). ``within``: in that connection's transaction (a batch's)."""
        with self._transaction(within) as connection:
            if before is not None:
                before(connection)
            record = self.records.kept(connection, pool, "workerpool")
            if record is None:
                raise UnknownRecordError(f"no workerpool {pool}")
            if worker not in record.members:
                raise ClaimForbiddenError(f"{worker} is not a member of workerpool {pool}")
            if now != self._swept_at:
                self._swept_at = now
                if tasks.sweep_due(connection, now):
                    tasks.sweep(connection, now)
            claimed = tasks.claim(connection, pool, worker, now, self.config.lease_seconds)
            if claimed is None:
                return None
            lease, view = claimed
            grants = self._grants(connection, view, worker, now)
            detail = {"worker": worker, "attempt": view["attempts"]}
            self._audit(connection, now, worker, "task.claim", lease.task_id, detail)
        return Claimed(view, lease, grants)

    def heartbeat(
        self,
        task_id: str,
        worker: str,
        token: str,
        now: int,
        *,
        before: Before = None,
        within: Connection | None = None,
    ) -> int:
        with self._transaction(within) as connection:
            if before is not None:
                before(connection)
            return tasks.heartbeat(
                connection, task_id, worker, token, now, self.config.lease_seconds
            )

    def release(
        self,
        task_id: str,
        worker: str,
        token: str,
        now: int,
        *,
        before: Before = None,
        within: Connection | None = None,
    ) -> dict[str, Any]:
        """The lease holder gives its lease back (it cannot finish the task): queued again
        at once rather than when the lease expires. The task's view."""
        with self._transaction(within) as connection:
            if before is not None:
                before(connection)
            found = tasks.held(connection, task_id, worker, token, now)
            tasks.give_back(connection, found, now)
            self._audit(connection, now, worker, "task.release", task_id, {})
            return tasks.view(tasks.existing(connection, task_id))

    def report(
        self,
        task_id: str,
        worker: str,
        report: Report,
        now: int,
        *,
        before: Before = None,
        within: Connection | None = None,
    ) -> dict[str, Any]:
        _check_report_fields(report)
        with self._transaction(within) as connection:
            if before is not None:
                before(connection)
            found = tasks.held(connection, task_id, worker, report.token, now)
            check_path(found.status, [*report.via, report.status])
            result = None
            if report.status == "COMPLETED":
                result = (str(report.result_digest), str(report.result_blob))
            after = tasks.set_status(
                connection,
                found,
                report.status,
                now,
                cause=report.cause,
                result=result,
                # the hub, not the worker, names who uploaded the blobs: the requester's
                # grants vouch for this worker only (the storage checks it did upload them)
                document=None if report.result is None else {**report.result, UPLOADER: worker},
                passed=report.via,
            )
            detail = {"from": found.status, "to": report.status, "cause": report.cause}
            self._audit(connection, now, worker, "task.status", task_id, detail)
        return after

    def cancel(
        self, task_id: str, requester: str, now: int, *, before: Before = None
    ) -> dict[str, Any]:
        with self.begin() as connection:
            if before is not None:
                before(connection)
            tasks.cancel(connection, task_id, requester, now)
            self._audit(connection, now, requester, "task.cancel", task_id, {})
            found = tasks.existing(connection, task_id)
        return tasks.view(found)

    def task_grants(
        self, task_id: str, requester: str, now: int, *, before: Before = None
    ) -> dict[str, str | None]:
        """Storage grants to the task's requester for its result and logs blobs:
        ``{"result": grant|None, "logs": grant|None}``."""
        with self.begin() as connection:
            if before is not None:
                before(connection)
            found = tasks.existing(connection, task_id)
            if found.requester != requester:
                raise tasks.TaskForbiddenError(
                    f"only task {task_id}'s requester {found.requester} reads its result, "
                    f"not {requester}"
                )
            document = tasks.view(found)["result"]
            blobs = result_blobs(document)
            uploader = None if document is None else document.get(UPLOADER)
            if not any(blobs.values()) or not isinstance(uploader, str):
                raise NoResultError(f"task {task_id} is {found.status} and has no result yet")
        expires = now + MAX_GRANT_SECONDS
        return {
            name: None
            if digest is None
            else issue_grant(
                self.signing_key, Grant(digest, requester, self.audience, expires, uploader)
            )
            for name, digest in blobs.items()
        }

    def sweep(self, now: int) -> set[str]:
        """Requeue expired leases, time out what is past its deadline (the pools that
        gained a queued task). A read first: nothing due takes no write lock."""
        with reading(self.engine) as connection:
            if not tasks.sweep_due(connection, now):
                return set()
        with self.engine.begin() as connection:
            return tasks.sweep(connection, now)

    @contextlib.contextmanager
    def _transaction(self, connection: Connection | None) -> Iterator[Connection]:
        """``connection`` (in the caller's transaction), or a transaction of its own."""
        if connection is not None:
            yield connection
            return
        with self.begin() as own:
            yield own

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction whose audit entries are appended at its end.

        The audit log is one chain, so its lock (PostgreSQL) serialises every writer: it
        is taken last, after the transaction's row work, and held for the entries'
        insert and the commit only. No writer that holds it waits for a row after, so
        two hubs cannot deadlock (one holding a task's row and waiting for the lock, the
        other holding the lock and waiting for the row)."""
        with self.engine.begin() as connection:
            connection.info[_PENDING] = []
            try:
                yield connection
                flush_audit(connection)
            finally:
                connection.info.pop(_PENDING, None)

    def _grants(
        self, connection: Connection, task: dict[str, Any], worker: str, now: int
    ) -> dict[str, str | None]:
        """Storage grants for the app's bundle and the dataset's blob, to ``worker``."""
        expires = now + MAX_GRANT_SECONDS
        # (digest, its uploader): a record may name any digest, so each grant vouches for
        # the record's owner only, who uploaded the bundle or dataset at deploy (checked
        # by the storage)
        digests: dict[str, tuple[str, str] | None] = {"bundle": None, "dataset": None}
        app = self.records.kept(connection, task["app"], "app")
        if app is not None:
            digests["bundle"] = (str(app.field("bundle")), app.owner)
        if task["dataset"] is not None:
            dataset = self.records.kept(connection, task["dataset"], "dataset")
            if dataset is not None:
                digests["dataset"] = (str(dataset.field("blob")), dataset.owner)
        return {
            name: None
            if entry is None
            else issue_grant(
                self.signing_key, Grant(entry[0], worker, self.audience, expires, entry[1])
            )
            for name, entry in digests.items()
        }

    def _audit(
        self,
        connection: Connection,
        now: int,
        actor: str,
        action: str,
        subject: str,
        detail: dict[str, Any],
    ) -> None:
        """An audit entry, appended when the transaction ends (:meth:`begin`)."""
        entry = {"at": now, "actor": actor, "action": action, "subject": subject}
        connection.info[_PENDING].append({**entry, "detail": detail})


_PENDING = "confide_hub_audit"  # in connection.info: the transaction's entries to append


def audit_mark(connection: Connection) -> int:
    """How many entries the transaction has pending (for :func:`audit_undo`)."""
    return len(connection.info[_PENDING])


def audit_undo(connection: Connection, mark: int) -> None:
    """Forget the entries pended since ``mark`` (their savepoint was rolled back)."""
    del connection.info[_PENDING][mark:]


def flush_audit(connection: Connection) -> None:
    """Append the transaction's pending entries: the log's lock, its head, one insert."""
    entries = connection.info.get(_PENDING) or []
    if not entries:
        return
    appender = audit.Appender(connection)
    for entry in entries:
        appender.append(**entry)
    appender.flush()
    entries.clear()


def _check_report_fields(report: Report) -> None:
    if report.status == "FAILED" and report.cause not in WORKER_CAUSES:
        raise TaskError(
            f"a FAILED report names its cause, one of {', '.join(sorted(WORKER_CAUSES))}"
        )
    if report.status != "FAILED" and report.cause is not None:
        raise TaskError("only a FAILED report names a cause")
    if report.result is not None:
        if report.status not in {"COMPLETED", "FAILED"}:
            raise TaskError("only a COMPLETED or FAILED report carries a result")
        blob = report.result.get("blob")
        if report.status == "COMPLETED" and blob is not None and blob != report.result_blob:
            raise TaskError("result.blob is the result_blob of the report")
    digests = (report.result_digest, report.result_blob)
    if report.status == "COMPLETED":
        if not all(isinstance(d, str) and _is_hex64(d) for d in digests):
            raise TaskError("COMPLETED needs result_digest and result_blob (64 lower-case hex)")
    elif any(d is not None for d in digests):
        raise TaskError("only a COMPLETED report names result_digest and result_blob")


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
