"""The front of attestation: a challenge, then a request prepared (planned, verified,
sealed) and committed (recorded with the grants ready at the same moment).

The parts, each in its own module: :mod:`~confide.sms.attest.request` (the request and
its checks), :mod:`~confide.sms.attest.plan` (what may be released, under which policy),
:mod:`~confide.sms.attest.orders` (the one validator of task orders),
:mod:`~confide.sms.attest.record` (sealing, the grant's transaction, audited refusals)
and :mod:`~confide.sms.attest.queries` (every statement they run).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confide.attestation.verifier import Verifier, verify_attestation
from confide.crypto.sealing import sealing_info
from confide.db.engine import reading
from confide.db.stores import DatabaseNonceStore
from confide.errors import AttestationError
from confide.sms.attest.orders import OrderFacts, OrderValidator
from confide.sms.attest.plan import Plan, Planner
from confide.sms.attest.record import Grant, Moved, Outcome, PendingGrant, Recorder, seal
from confide.sms.attest.request import (
    AttestationRefusedError,
    AttestRequest,
    SessionTarget,
    TargetNotFoundError,
    TaskTarget,
)
from confide.sms.service import Sms
from confide.sms.tasks import TaskOrder, TaskRecord


class Attestations:
    def __init__(
        self, sms: Sms, verifiers: Mapping[str, Verifier], nonces: DatabaseNonceStore
    ) -> None:
        """``nonces`` keeps its rows in ``sms``'s database (checked and used up there)."""
        self.sms = sms
        self.verifiers = verifiers
        self.nonces = nonces
        self.orders = OrderValidator(sms)
        self.planner = Planner(sms, nonces, self.orders)
        self.recorder = Recorder(sms, nonces, self.orders)

    def challenge(self, now: int) -> bytes:
        return self.nonces.issue(now)

    def attest(self, request: AttestRequest, now: int, signer: str | None = None) -> Grant:
        """Verify and release, or raise AttestationRefusedError naming its reasons (every
        one the policy finds in the evidence; for a task, every problem of its order, as
        :meth:`check_order` names them before it is queued): a :meth:`prepare` and a
        :meth:`commit` of that grant alone."""
        pending = self.prepare(request, now, signer)
        return self.commit([pending])[0].result()

    def prepare(
        self,
        request: AttestRequest,
        now: int,
        signer: str | None = None,
        looked: TaskLookup | None = None,
    ) -> PendingGrant:
        """Everything of an attestation before its transaction: the plan, the verdict and
        the sealed configuration. A refusal is audited here (AttestationRefusedError).

        The nonce is checked first: a request without a live challenge costs a read or two
        (for a session, the nonce is read with its plan's other rows), takes no lock and
        leaves no trace (so the public endpoint cannot flood the audit log). Nor does one
        naming a session version or task that does not exist (TargetNotFoundError): its
        nonce stays live, as for a malformed request, since nothing was verified. With a
        live nonce and an existing target, the nonce is used up in the transaction that
        records the outcome, the grant or an audited refusal (one ``DELETE … RETURNING``),
        so it is used once: of two requests racing with one nonce, one is recorded and the
        other refused as a replay, with no audit entry. A request that fails otherwise
        (the database unavailable) leaves it live: nothing was recorded.
        """
        refusal: AttestationRefusedError | None = None
        if isinstance(request.target, SessionTarget):
            with reading(self.sms.engine) as connection:  # one connection for the plan's reads
                try:
                    plan = self.planner.session_plan(request, request.target, connection, now)
                except AttestationError as exc:  # the nonce is not live: nothing audited
                    raise AttestationRefusedError(str(exc)) from None
                except AttestationRefusedError as refused:
                    # A session's request may be refused before its nonce was read (a
                    # version that is not current, a service not in it): read it now, so
                    # that one without a live nonce ends here, having taken no lock (the
                    # refusal's transaction, which takes the audit log's, then uses the
                    # nonce up).
                    try:
                        self.nonces.peek(connection, request.nonce, now)
                    except AttestationError as exc:
                        raise AttestationRefusedError(str(exc)) from None
                    refusal = refused
        else:
            found = looked if looked is not None else self.look_up(request, now, signer)
            try:
                with reading(self.sms.engine) as connection:
                    plan = self.planner.task_plan(
                        request, request.target, found.record, found.facts, connection, now
                    )
            except AttestationRefusedError as refused:
                refusal = refused
        if refusal is not None:
            if not isinstance(refusal, TargetNotFoundError | _NotLiveError):
                self.recorder.refuse(request, now, refusal.reasons)
            raise refusal
        verdict = verify_attestation(
            request.evidence,
            nonce=request.nonce,
            binding=request.binding(self.sms.config.sms_id),
            policy=plan.policy,
            verifiers=self.verifiers,
            nonces=_CONSUMED,
            now=now,
        )
        reasons = list(verdict.reasons)
        if verdict.ok and verdict.appraisal is not None and verdict.appraisal.tee == "sim":
            reasons += self._sim_platform_reasons(request, plan, verdict.appraisal.platform, signer)
        if not verdict.ok or reasons:
            self.recorder.refuse(request, now, tuple(reasons))
            raise AttestationRefusedError(*reasons)
        assert verdict.appraisal is not None  # noqa: S101 - ok verdicts carry one
        jti = os.urandom(16).hex()
        info = sealing_info(
            sms_id=self.sms.config.sms_id,
            subject=request.subject,
            service=request.service,
            nonce=request.nonce,
        )
        # An output volume without a key gets one: made here, stored when the grant is
        # recorded unless another grant stored one first (that one is then used).
        fresh = [
            (volume, os.urandom(32))
            for volume in plan.config.get("volumes", [])
            if volume["key"] is None
        ]
        for volume, key in fresh:
            volume["key"] = key.hex()
        # Token and seal before the transaction, so the write lock is held for the writes
        # alone; and a key HPKE cannot seal to (say, a low-order point) is refused before
        # anything is recorded (no release, no used-up lease).
        try:
            sealed = seal(self.sms, request, plan, verdict, info, jti, now)
        except AttestationRefusedError as exc:
            self.recorder.refuse(request, now, exc.reasons)
            raise
        return PendingGrant(request, plan, verdict, now, jti, info, fresh, sealed)

    def look_up(self, request: AttestRequest, now: int, signer: str | None) -> TaskLookup:
        """A task's lookups, before its plan: its nonce read first (a request without a
        live one is refused here, having asked the hub nothing), then the hub's task and
        who asks (:meth:`OrderValidator.claim`) and the order's records. They may wait on
        the hub, so they hold no database connection (the HTTP layer runs them on threads
        of their own). A refusal is audited (AttestationRefusedError)."""
        target = request.target
        assert isinstance(target, TaskTarget)  # noqa: S101 - a task's request
        try:
            with reading(self.sms.engine) as connection:
                try:
                    self.nonces.peek(connection, request.nonce, now)
                except AttestationError as exc:  # the nonce is not live: nothing audited
                    raise _NotLiveError(str(exc)) from None
            record = self.orders.claim(request, target, signer)
            return TaskLookup(record, self.orders.facts(record.order))
        except AttestationRefusedError as refusal:
            if not isinstance(refusal, TargetNotFoundError | _NotLiveError):
                self.recorder.refuse(request, now, refusal.reasons)
            raise

    def commit(self, pending: Sequence[PendingGrant], moved: Moved | None = None) -> list[Outcome]:
        """Record prepared grants in one transaction (:meth:`Recorder.commit`; ``moved``:
        :meth:`Recorder.claims_moved`, the hub's word on each task's claim, asked first)."""
        return self.recorder.commit(pending, moved)

    def check_order(
        self, order: TaskOrder, signature: str, now: int, facts: OrderFacts | None = None
    ) -> list[str]:
        """Everything that would stop this order's release, found before the task is
        queued (iExec fails late and silently): each problem names what is wrong, in the
        words a release refuses with (one validator, :class:`OrderValidator`)."""
        if facts is None:  # outside any connection: it may ask the hub
            facts = self.orders.facts(order)
        with reading(self.sms.engine) as connection:
            return self.orders.review(order, signature, connection, facts, now).problems

    def _sim_platform_reasons(
        self, request: AttestRequest, plan: Plan, platform: str | None, signer: str | None
    ) -> list[str]:
        """A sim platform key speaks only for the wallet that registered it: the session's
        owner (or a wallet the update policy of the version being released names), or the
        task's signing worker. Anyone may register a key, so a key registered by a
        stranger proves nothing."""
        owner = self.sms.platforms.owner(bytes.fromhex(platform or ""))
        if isinstance(request.target, SessionTarget):
            allowed = {request.target.owner}
            if plan.session is not None:
                update = plan.session.document["access_policy"]["update"]
                allowed |= {a for a in update if a != "owner"}
            whose = "the session's owner (or a wallet its update policy names)"
        else:
            allowed = {signer} if signer else set()
            whose = "the worker that signed the request"
        if owner not in allowed:
            return [f"the sim platform key was not registered by {whose}"]
        return []


@dataclass(frozen=True)
class TaskLookup:
    """What the registry said of a task's attestation: the task, and its order's records."""

    record: TaskRecord
    facts: OrderFacts


class _NotLiveError(AttestationRefusedError):
    """A task's request without a live nonce: refused, nothing audited."""


class _AlreadyConsumed:
    """The nonce store handed to ``verify_attestation``: :meth:`Attestations.prepare` has
    checked the nonce itself (first, so refusals without one cost nothing) and the
    transaction that records the grant or the refusal uses it up."""

    def issue(self, now: float) -> bytes:
        raise AttestationError("not a nonce source")

    def consume(self, nonce: bytes, now: float) -> None:
        del nonce, now


_CONSUMED = _AlreadyConsumed()
