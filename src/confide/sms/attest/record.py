"""Recording attestations: sealing, the grant's transaction (group commit), the recheck
under the audit log's lock, and audited refusals.

Grants that are ready at one moment share one transaction: its BEGIN, the audit log's
lock, one ``DELETE … RETURNING`` of their nonces, each grant's recheck, then one INSERT
per table and the audit entries, and its COMMIT and disk flush. A refusal found here is
audited in the same transaction, its nonce used up; the others go on.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from confide.attestation.nonces import NONCE_USED
from confide.attestation.token import DEFAULT_TTL_SECONDS
from confide.attestation.verifier import Verdict
from confide.crypto.sealing import (
    SEALED_CONFIG_LABEL,
    seal_for_enclave,
    sealed_document,
    sealed_payload,
    signed_sealed_message,
)
from confide.db import audit
from confide.db.stores import DatabaseNonceStore
from confide.errors import AttestationError
from confide.sms.attest.orders import OrderValidator, task_problems
from confide.sms.attest.plan import Plan
from confide.sms.attest.queries import (
    INSERT_ATTESTATIONS,
    INSERT_RELEASES,
    RecheckReads,
    TaskState,
    recheck_reads,
)
from confide.sms.attest.request import (
    AttestationRefusedError,
    AttestRequest,
    SessionTarget,
    TaskTarget,
)
from confide.sms.registry import HubUnavailableError
from confide.sms.secrets import SecretExistsError, SecretNotFoundError
from confide.sms.service import Sms
from confide.sms.sessions import volume_key_ref

RELEASED = "the task's secrets were already released for this lease"
Moved = dict[int, str | HubUnavailableError | None]  # a grant's id -> the hub's answer


@dataclass(frozen=True)
class Grant:
    """What the enclave receives: the sealed configuration, the sms's signature over it,
    and the attestation token (also inside the sealed payload)."""

    sealed: bytes = field(repr=False)
    signature: bytes
    token: str
    config_hash: str
    status: str
    jti: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sealed": base64.b64encode(self.sealed).decode(),
            "signature": self.signature.hex(),
            "token": self.token,
            "config_hash": self.config_hash,
            "status": self.status,
        }


@dataclass(frozen=True)
class Sealed:
    blob: bytes = field(repr=False)
    token: str
    config_hash: str


@dataclass(eq=False)
class PendingGrant:
    """An attestation verified and sealed, waiting for its transaction
    (``Attestations.commit``). Compared by identity: each is one request."""

    request: AttestRequest
    plan: Plan = field(repr=False)
    verdict: Verdict
    now: int
    jti: str
    info: bytes
    fresh: list[tuple[dict[str, Any], bytes]] = field(repr=False)  # new output volume keys
    sealed: Sealed = field(repr=False)


@dataclass(frozen=True)
class Outcome:
    """What the transaction made of a pending grant: granted, refused (and why), or
    failed (the database's error: nothing of it was recorded)."""

    granted: Grant | None = None
    refused: AttestationRefusedError | None = None
    failed: Exception | None = None

    def result(self) -> Grant:
        """The grant, or the refusal or the database's error raised."""
        if self.granted is None:
            raise self.refused or self.failed or AttestationRefusedError("not recorded")
        return self.granted


class _NonceGoneError(Exception):
    """The nonce was used up by a concurrent request between the check and the write."""


def seal(
    sms: Sms, request: AttestRequest, plan: Plan, verdict: Verdict, info: bytes, jti: str, now: int
) -> Sealed:
    """The token over the configuration's hash, and both sealed to the enclave."""
    encoded, digest = sealed_document(plan.config)
    token = sms.tokens.issue(
        verdict,
        request.binding(sms.config.sms_id),
        audience=plan.audience,
        config_hash=digest,
        now=now,
        jti=jti,
    )
    payload = sealed_payload(encoded, token)
    try:
        blob = seal_for_enclave(payload, request.x25519_public, info)
    except (AttestationError, ValueError):  # e.g. a low-order point
        raise AttestationRefusedError("the enclave's X25519 key cannot be sealed to") from None
    return Sealed(blob, token, digest)


def refusal_entry(request: AttestRequest, now: int, reasons: Sequence[str]) -> dict[str, Any]:
    """The audit entry of a refused attestation: every string in it bounded and checked
    (``AttestRequest.from_json``). The claimed worker is not authenticated for a session,
    so it is detail, not actor."""
    return {
        "at": now,
        "actor": "enclave",
        "action": "attest.refused",
        "subject": request.label(),
        "detail": {
            "service": request.service,
            "tee": request.evidence.tee,
            "worker": request.worker,
            "reasons": list(reasons),
        },
    }


class _Writes:
    """A batch's rows, written together at its end (one INSERT per table)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.log = audit.Appender(connection)
        self.releases: list[dict[str, Any]] = []
        self.attestations: list[dict[str, Any]] = []

    def flush(self) -> None:
        INSERT_RELEASES.execute(self.connection, self.releases)
        INSERT_ATTESTATIONS.execute(self.connection, self.attestations)
        self.log.flush()


class Recorder:
    def __init__(self, sms: Sms, nonces: DatabaseNonceStore, orders: OrderValidator) -> None:
        self.sms = sms
        self.nonces = nonces
        self.orders = orders

    def refuse(self, request: AttestRequest, now: int, reasons: tuple[str, ...]) -> None:
        """Audit a refusal and use its nonce up, in one transaction (no retry with the same
        nonce). If a concurrent request used the nonce first, nothing is written and this
        is refused as the replay it is (AttestationRefusedError)."""

        def use_nonce(connection: Connection) -> None:
            # The audit log's lock before the nonce's row, as a grant takes them: in the
            # other order a refusal and a grant with one nonce would deadlock.
            audit.lock(connection)
            if not self.nonces.take(connection, request.nonce, now):
                raise _NonceGoneError

        try:
            audit.append_now(
                self.sms.engine, also=use_nonce, **refusal_entry(request, now, reasons)
            )
        except _NonceGoneError:
            raise AttestationRefusedError(NONCE_USED) from None

    def claims_moved(self, pending: Sequence[PendingGrant]) -> Moved:
        """For each task grant (by ``id``), why its claim no longer holds (None: it
        does), or the hub's error: asked of the hub before the grants' transaction,
        never inside it (the HTTP layer asks on threads of its own)."""
        moved: Moved = {}
        for grant in pending:
            target = grant.request.target
            if isinstance(target, TaskTarget):
                try:
                    moved[id(grant)] = self.orders.claim_moved(grant.request, target)
                except HubUnavailableError as exc:
                    moved[id(grant)] = exc
        return moved

    def commit(self, pending: Sequence[PendingGrant], moved: Moved | None = None) -> list[Outcome]:
        """Record prepared grants, in order, in one transaction (group commit): the
        grants that wait at one moment share its BEGIN, lock, COMMIT and disk flush.

        Each grant is checked on its own under the lock before anything of it is
        written: its nonce is used up (a grant whose nonce another request used is
        refused, with no entry), then the recheck; a refusal is audited in the same
        transaction, with its nonce used up, and the others go on. An error of the
        database fails the whole transaction, so every grant in it (the HTTP layer
        answers 503; nothing was recorded and each nonce is still live). Should a UNIQUE
        constraint still stop a batch (a write that did not queue on the lock), its
        grants are recorded one by one, so one cannot make another fail.
        """
        if not pending:
            return []
        # Whether each task's claim still holds is the hub's to say (``moved``, asked
        # before the transaction); a hub that did not answer fails that grant alone (503,
        # its nonce still live).
        if moved is None:
            moved = self.claims_moved(pending)
        failed = {
            key: Outcome(failed=error)
            for key, error in moved.items()
            if isinstance(error, HubUnavailableError)
        }
        if failed:
            going = [p for p in pending if id(p) not in failed]
            outcomes = iter(self.commit(going, moved) if going else [])
            return [failed.get(id(p)) or next(outcomes) for p in pending]
        reasons = {
            key: reason for key, reason in moved.items() if not isinstance(reason, Exception)
        }
        try:
            return self._commit(pending, reasons)
        except (IntegrityError, SecretExistsError):
            if len(pending) > 1:  # each in a transaction of its own, failing on its own
                return [self._commit_alone(p, moved) for p in pending]
            request = pending[0].request
            if isinstance(request.target, TaskTarget):
                reason = RELEASED
            else:  # two enclaves made the first key of an output volume at once
                reason = "a concurrent attestation made an output volume's key: attest again"
            try:
                self.refuse(request, pending[0].now, (reason,))
            except AttestationRefusedError as exc:
                return [Outcome(refused=exc)]
            return [Outcome(refused=AttestationRefusedError(reason))]

    def _commit_alone(self, pending: PendingGrant, moved: Moved) -> Outcome:
        """One grant of a batch that a constraint stopped, recorded in its own transaction.
        A database error here is this grant's alone (its caller is answered 503): the
        grants recorded before it stay recorded and are answered."""
        try:
            return self.commit([pending], moved)[0]
        except Exception as exc:  # the database: only this grant's answer
            return Outcome(failed=exc)

    def _commit(
        self, pending: Sequence[PendingGrant], moved: dict[int, str | None]
    ) -> list[Outcome]:
        """One transaction: the lock, every nonce used up in one statement, each grant's
        recheck, then its rows and entries, written together at the end."""
        outcomes: list[Outcome] = []
        with self.sms.engine.begin() as connection:
            audit.lock(connection)  # first: what each grant reads below stays true to COMMIT
            expiries = self.nonces.take_many(connection, [p.request.nonce for p in pending])
            writes = _Writes(connection)
            used: set[bytes] = set()
            leases: set[tuple[str, str]] = set()
            granted: dict[str, int] = {}  # task id -> releases granted in this batch
            # Grants of one session (or task) with the same secrets read the same rows:
            # read once per batch, until a grant stores an output volume's key.
            reads: dict[Any, RecheckReads] = {}
            for grant in pending:
                request, now = grant.request, grant.now
                expiry = expiries.get(request.nonce)
                if expiry is None or now >= expiry or request.nonce in used:
                    # a concurrent request with this nonce won (or it expired)
                    outcomes.append(Outcome(refused=AttestationRefusedError(NONCE_USED)))
                    continue
                used.add(request.nonce)
                target = request.target
                head, reason = self._recheck(
                    connection,
                    request,
                    grant.plan,
                    reads,
                    moved=moved.get(id(grant)),
                    now=now,
                    earlier=granted.get(target.task_id, 0) if isinstance(target, TaskTarget) else 0,
                )
                if reason is None and isinstance(target, TaskTarget):
                    lease = (target.task_id, target.lease_token)
                    reason = RELEASED if lease in leases else None  # earlier in this batch
                    leases.add(lease)
                    if reason is None:
                        granted[target.task_id] = granted.get(target.task_id, 0) + 1
                if reason is not None:
                    writes.log.append(head=head, **refusal_entry(request, now, (reason,)))
                    outcomes.append(Outcome(refused=AttestationRefusedError(reason)))
                    continue
                outcomes.append(Outcome(granted=self._record(writes, grant, head)))
                if grant.fresh:  # a key stored: what the next grants read has changed
                    reads.clear()
            writes.flush()
        return outcomes

    def _recheck(
        self,
        connection: Connection,
        request: AttestRequest,
        plan: Plan,
        reads: dict[Any, RecheckReads] | None = None,
        *,
        moved: str | None = None,
        now: int = 0,
        earlier: int = 0,
    ) -> tuple[audit.Head, str | None]:
        """Inside the grant's transaction, after the audit log's lock: nothing the plan
        read has moved on since (a secret rotated, the session updated, the lease
        re-claimed or already used while the evidence was being verified), or the reason
        it has. Otherwise the release would be of a superseded state. A secret or session
        write appends to the audit log in its transaction too, so it either committed
        before the lock was taken (and is seen here) or comes after this grant. So does a
        task's cancel and each of its releases (``earlier``: granted before in this
        batch): an expired, cancelled or fully released order is refused here. A task's
        lease lives in the registry (the hub), not under this lock: ``moved`` is what the
        hub said just before the transaction, and a lease re-claimed after that but
        before the commit is not seen (the window is the commit's). One statement (per
        BATCH secrets) reads it all, with the log's head for the entry that follows; kept
        in ``reads`` (a batch's) for the next grant that would read the same."""
        target = request.target
        refs = [r for r, _ in plan.versions]
        key = (target, tuple(refs))
        found = None if reads is None else reads.get(key)
        if found is None:
            found = recheck_reads(connection, refs, target)
            if reads is not None:
                reads[key] = found
        head = found.head
        for (ref, version), now_version in zip(plan.versions, found.versions, strict=True):
            if now_version != version:
                return head, f"secret {ref.label()} changed while attesting: attest again"
        if isinstance(target, SessionTarget):
            if found.superseded:
                return head, (
                    f"session {target.owner}/{target.name} version {target.hash} is no "
                    f"longer current (the session was updated): start the enclave for the "
                    f"current version"
                )
            return head, None
        if found.released:
            return head, RELEASED
        assert plan.order is not None  # noqa: S101 - a task's plan names its order
        state = TaskState(found.releases + earlier, found.cancelled)
        problems = task_problems(plan.order, state, now)
        return head, problems[0] if problems else moved

    def _record(self, writes: _Writes, pending: PendingGrant, head: audit.Head) -> Grant:
        """One checked grant: its output volumes' new keys (stored now), and its task
        release, attestation row and audit entry (queued in ``writes``; ``head`` is the
        log's head the recheck read)."""
        request, plan, verdict, now = pending.request, pending.plan, pending.verdict, pending.now
        assert verdict.appraisal is not None  # noqa: S101 - prepared grants are verified
        sealed = pending.sealed
        if pending.fresh:  # a stored key is a secret write, with an audit entry of its own
            writes.log.forget_head()
            if self._store_output_keys(writes.connection, plan, pending.fresh, now):
                sealed = seal(self.sms, request, plan, verdict, pending.info, pending.jti, now)
        if isinstance(request.target, TaskTarget):
            writes.releases.append(
                {
                    "task_id": request.target.task_id,
                    "lease_token": request.target.lease_token,
                    "jti": pending.jti,
                    "worker": request.worker,
                    "released_at": now,
                }
            )
        writes.attestations.append(
            {
                "jti": pending.jti,
                "ed25519_public": request.ed25519_public.hex(),
                "subject": request.subject,
                "scope": plan.scope,
                "service": request.service,
                "worker": request.worker,
                "expires_at": now + DEFAULT_TTL_SECONDS,
                "created_at": now,
            }
        )
        writes.log.append(
            at=now,
            head=None if pending.fresh else head,
            actor=request.worker if isinstance(request.target, TaskTarget) else "enclave",
            action="attest.granted",
            subject=request.label(),
            detail={
                "service": request.service,
                "jti": pending.jti,
                "status": verdict.status,
                "worker": request.worker,
                "tee": verdict.appraisal.tee,
                "measurement": str(verdict.appraisal.measurement),
                "tcb_status": verdict.appraisal.tcb_status,
                "released": plan.released,
                "config_hash": sealed.config_hash,
            },
        )
        signature = self.sms.tokens.sign_blob(
            SEALED_CONFIG_LABEL, signed_sealed_message(pending.info, sealed.blob)
        )
        return Grant(
            sealed.blob, signature, sealed.token, sealed.config_hash, verdict.status, pending.jti
        )

    def _store_output_keys(
        self,
        connection: Connection,
        plan: Plan,
        fresh: list[tuple[dict[str, Any], bytes]],
        now: int,
    ) -> bool:
        """In the grant's transaction, which holds the audit log's lock (so a grant that
        stored the key committed before it is read here, and it is found, not written
        twice), store the keys made for output volumes that had none; True if another
        grant stored one since the plan read it (the configuration now holds that key
        instead, and must be sealed again)."""
        changed = False
        for volume, key in fresh:
            assert plan.session is not None  # noqa: S101 - volumes are a session's
            ref = volume_key_ref(plan.session.owner, plan.session.name, volume["name"])
            try:  # another grant may have stored it since the plan read it
                stored = self.sms.secrets.latest(ref, connection)[1]
            except SecretNotFoundError:
                self.sms.secrets.put_in(connection, ref, key, update=False, now=now)
            else:
                volume["key"], changed = stored.hex(), True
        return changed
