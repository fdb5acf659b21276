"""One validator for task orders: what the order check answers before a task is queued
and what a release refuses are the same checks, with the same words.

:meth:`OrderValidator.review` collects every problem of an order: its signature, the sms
it pins, its expiry (``valid_until``), a cancel by its requester, its releases so far
against ``max_attempts``, its records (:meth:`OrderValidator.facts`, looked up first and
outside any connection: the owner-signed app record and the measurement it asks for, the
dataset record and its checksum, the workerpool record and whether it admits the
requester), the secrets it maps, the result key it pins, and what each secret's owner
allows (release policies). The order
check (``POST /v1/task-orders/check``) returns them all; a release refuses with them all
when there is any. A check written once cannot be forgotten on one of the two paths.

A release also asks who is asking (:meth:`OrderValidator.claim`: the task exists, the
request is signed by a member of the order's workerpool holding the current lease), first,
so that a wallet outside the pool learns nothing of the order from a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection

from confide.attestation.policy import Policy
from confide.crypto.result_key import result_key_sha256
from confide.sms.attest.queries import TaskState, task_state
from confide.sms.attest.request import (
    AttestationRefusedError,
    AttestRequest,
    TargetNotFoundError,
    TaskTarget,
)
from confide.sms.registry import AppRecord, DatasetRecord, RegistryError, WorkerpoolRecord
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secrets import SecretRef, StoredSecret, result_key_ref
from confide.sms.service import Sms
from confide.sms.tasks import TaskOrder, TaskOrderError, TaskRecord

_R = TypeVar("_R")


@dataclass
class OrderReview:
    """What the validator found of an order: every problem (none: it can be released),
    the secrets it names, and those it read (opened only for an order its requester
    signed; the result key, a public key, always)."""

    order: TaskOrder
    problems: list[str]
    app: AppRecord | None
    developer: SecretRef | None  # the app developer secret (optional)
    mapped: list[tuple[int, SecretRef]]  # the requester's secrets, by index
    dataset_key: SecretRef | None
    result_key: SecretRef | None
    found: dict[SecretRef, StoredSecret] = field(repr=False)


@dataclass(frozen=True)
class OrderFacts:
    """What the registry says of an order's app, dataset and workerpool, looked up before
    any database connection is taken (a lookup may fetch from the hub), and the
    problems found there (a record that does not verify is named)."""

    app: AppRecord | None
    dataset: DatasetRecord | None
    workerpool: WorkerpoolRecord | None
    problems: tuple[str, ...]


class OrderValidator:
    def __init__(self, sms: Sms) -> None:
        self.sms = sms

    def facts(self, order: TaskOrder) -> OrderFacts:
        """The order's records (owner-signed, verified by the registry) and what they
        refuse: an unknown or forged record, another measurement than the app's owner
        signed, another dataset checksum than its owner's, a requester the workerpool
        does not admit. HubUnavailableError when the hub is needed and does not answer."""
        registry = self.sms.registry
        problems: list[str] = []

        def look(lookup: Callable[[str], _R | None], address: str, what: str) -> _R | None:
            try:
                found = lookup(address)
            except RegistryError as exc:
                problems.append(str(exc))
                return None
            if found is None:
                problems.append(f"unknown {what} {address}")
            return found

        app = look(registry.app, order.app, "app")
        if app is not None and order.app_measurement not in app.measurements:
            problems.append(
                f"the order's app measurement {order.app_measurement.short()} is not one "
                f"the app's owner registered"
            )
        dataset = None
        if order.dataset is not None:
            dataset = look(registry.dataset, order.dataset, "dataset")
            if dataset is not None and order.dataset_checksum != dataset.checksum:
                problems.append(
                    f"the order's dataset checksum {order.dataset_checksum} is not the one "
                    f"dataset {dataset.address}'s owner signed ({dataset.checksum})"
                )
        elif order.dataset_checksum is not None:
            problems.append("the order names a dataset checksum but no dataset")
        pool = look(registry.workerpool, order.workerpool, "workerpool")
        if pool is not None and not pool.admits(order.requester):
            problems.append(
                f"requester {order.requester} is not admitted to workerpool {pool.address}"
            )
        return OrderFacts(app, dataset, pool, tuple(problems))

    def review(
        self,
        order: TaskOrder,
        signature: str,
        connection: Connection,
        facts: OrderFacts,
        now: int,
    ) -> OrderReview:
        """Every problem of ``order`` signed with ``signature`` (its records' in
        ``facts``, looked up first); its secrets read on ``connection`` (one statement per
        BATCH of them), with what this sms recorded of the task (releases, a cancel)."""
        problems: list[str] = []
        signed = True
        try:
            order.check_signature(signature)
        except TaskOrderError as exc:
            problems.append(str(exc))
            signed = False
        if order.sms_key != self.sms.tokens.public_key().hex():
            problems.append("the task order pins another sms key: not released here")
        problems += task_problems(order, task_state(connection, order.task_id()), now)
        problems += tdx_problems(order)
        problems += facts.problems
        app, dataset = facts.app, facts.dataset
        # Every secret the order names: the requester's mapped ones (``labels``), and the
        # app developer secret and the dataset key (``restricted`` by their owners).
        mapped = [
            (index, SecretRef(order.requester, "requester", name)) for index, name in order.secrets
        ]
        labels = {ref: f"requester secret {ref.name!r}" for _, ref in mapped}
        restricted: dict[SecretRef, str] = {}
        developer = dataset_key = None
        if app is not None:
            developer = SecretRef(app.owner, "app", "1", subject=app.address)
            restricted[developer] = "the app developer secret"  # optional
        if dataset is not None:
            dataset_key = SecretRef(dataset.owner, "dataset", "key", subject=dataset.address)
            restricted[dataset_key] = f"dataset {dataset.address}"
        result = None if order.result_key is None else result_key_ref(order.requester)
        # Values are opened (their policies authenticated) only for an order its requester
        # signed; otherwise existence alone is read, as a HEAD tells it (and the result
        # key, a public key).
        opened = [*labels, *restricted] if signed else []
        secrets = self.sms.secrets
        found = secrets.release_many([*opened, *([] if result is None else [result])], connection)
        present = set(found) if signed else secrets.exists_many([*labels, *restricted], connection)
        missing = [ref.name for ref in labels if ref not in present]
        if missing:
            problems.append(
                f"requester secret(s) {', '.join(repr(m) for m in missing)} of "
                f"{order.requester} do not exist"
            )
        if dataset_key is not None and dataset_key not in present:
            problems.append(f"dataset {dataset_key.subject} has no key")
        if result is not None and order.result_key is not None:
            problems += _result_key_problems(result, order.result_key, found)
        if signed:  # the requester asks: what each secret's owner allows, for this order
            problems += self._policy_problems(order, labels | restricted, restricted, found)
        return OrderReview(order, problems, app, developer, mapped, dataset_key, result, found)

    def _policy_problems(
        self,
        order: TaskOrder,
        labels: Mapping[SecretRef, str],
        restricted: Mapping[SecretRef, str],
        found: Mapping[SecretRef, StoredSecret],
    ) -> list[str]:
        """Why a secret the order would get (``labels``, read into ``found``) refuses it
        by its release policy: a TEE or a weakness the order runs with that it does not
        allow, or (``restricted``: app and dataset secrets) a measurement, requester or
        workerpool its owner did not name. An order names one measurement, so one TEE:
        secrets that each admit it admit it together (the attestation enforces their
        intersection too)."""
        ordered = order_policy(order)
        problems: list[str] = []
        for ref, what in labels.items():
            stored = found.get(ref)
            if stored is None:
                continue  # missing ones are reported apart (an app secret is optional)
            allowed = stored.policy.to_policy(allow_sim=self.sms.config.allow_sim)
            problems += _tee_problems(ordered.intersect(allowed), what)
            if ref in restricted:
                problems += _restriction_problems(stored.policy, order, what)
        return problems

    def claim(self, request: AttestRequest, target: TaskTarget, signer: str | None) -> TaskRecord:
        """The task exists (TargetNotFoundError, never audited, if not), the request is
        signed by the worker it names, a member of the order's workerpool (per its
        owner-signed record) holding the task's current lease. Looks the task up in the
        registry (the hub): call it outside any transaction."""
        registry = self.sms.registry
        try:
            record = registry.task(target.task_id)
        except RegistryError as exc:
            raise AttestationRefusedError(str(exc)) from None
        if record is None or record.task_id != target.task_id:
            raise TargetNotFoundError(f"unknown task {target.task_id}")
        # Who asks, first: a wallet outside the task's workerpool, or without its lease,
        # learns nothing more of the order (its signature, its sms) from the refusal.
        if signer != request.worker:
            raise AttestationRefusedError(
                "a task's attestation is signed by the worker it names"
                + (f" (signed by {signer})" if signer else " (it is not signed)")
            )
        workerpool = record.order.workerpool
        try:
            member = registry.is_member(workerpool, request.worker)
        except RegistryError as exc:
            raise AttestationRefusedError(str(exc)) from None
        if not member:
            raise AttestationRefusedError(
                f"worker {request.worker} is not a member of workerpool {workerpool}"
            )
        if (
            not record.lease_token
            or target.lease_token != record.lease_token
            or record.worker.lower() != request.worker
        ):
            raise AttestationRefusedError(
                "the lease token is not the task's current lease (a stale or another "
                "worker's claim)"
            )
        return record

    def claim_moved(self, request: AttestRequest, target: TaskTarget) -> str | None:
        """Why the task's claim no longer holds: the lease re-claimed, or the worker
        removed from the task's workerpool. Asked of the registry (the hub) just before
        the grant's transaction, never inside it."""
        registry = self.sms.registry
        try:
            record = registry.task(target.task_id)
            if (
                record is None
                or record.lease_token != target.lease_token
                or record.worker.lower() != request.worker
            ):
                return "the task's lease changed while attesting"
            member = registry.is_member(record.order.workerpool, request.worker)
        except RegistryError as exc:
            return str(exc)
        if not member:
            return (
                f"worker {request.worker} left workerpool {record.order.workerpool} while attesting"
            )
        return None


def task_problems(order: TaskOrder, state: TaskState, now: int) -> list[str]:
    """What stops a release whatever the hub says: the order expired, the requester
    cancelled the task, or it was released as many times as the order allows."""
    problems: list[str] = []
    task = order.task_id()
    if now > order.valid_until:
        when = datetime.fromtimestamp(order.valid_until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        problems.append(f"the task order expired at {when}")
    if state.cancelled:
        problems.append(f"the requester cancelled task {task}")
    if state.releases >= order.max_attempts:
        problems.append(
            f"task {task} was released {state.releases} time(s): its order allows at most "
            f"{order.max_attempts} (max_attempts)"
        )
    return problems


# Why a TDX task order is refused until the TD image of docs/hardware.md can be built and
# tested: the quote's MRTD and RTMR1-2 cover firmware, kernel and command line, not the
# root filesystem, the runtime or the bundle, and any root process of a TD can ask for a
# quote. One sentence (no "; ": a release joins its problems with it), the same in the
# order check and a release.
TDX_REFUSED = (
    "TDX task orders are refused: confide has no TD image yet whose quote pins the enclave "
    "runtime and the app bundle (MRTD and RTMR1-2 measure firmware, kernel and command "
    "line only, and the dm-verity root filesystem and RTMR3 bundle extension of "
    "docs/hardware.md are not built and tested yet): run with --tag tee,sgx or tee,sim"
)


def tdx_problems(order: TaskOrder) -> list[str]:
    """TDX stays refused (``TDX_REFUSED``) for an order that names it, or whose app
    measurement is a ``tdx:`` one, until the TD image of docs/hardware.md exists."""
    if "tdx" in order.tee or order.app_measurement.tee == "tdx":
        return [TDX_REFUSED]
    return []


def order_policy(order: TaskOrder) -> Policy:
    """The policy a task order asks for: its app measurement, TEE types and tolerations."""
    return Policy(
        measurements=frozenset({order.app_measurement}),
        tee_types=frozenset(order.tee),
        tolerate=frozenset(order.tolerate),
        ignore_advisories=frozenset(order.ignore_advisories),
    )


def _tee_problems(effective: Policy, what: str) -> list[str]:
    """Why ``effective`` (an order's policy and release policies) admits no evidence the
    order can bring: no TEE type left, or simulation left without its toleration."""
    tees = effective.allowed_tees()
    if not tees:
        return [f"{what}: not released to the TEE this order runs on"]
    if tees == {"sim"} and "simulation" not in effective.tolerate:
        return [f"{what}: simulation, which this order runs, is not tolerated"]
    return []


def _restriction_problems(policy: ReleasePolicy, order: TaskOrder, what: str) -> list[str]:
    """App and dataset secrets go only to app measurements their owner signed for: the
    registry (the hub) is not trusted to choose the code that receives them; or, for a
    dataset key, to any app when its owner said so explicitly (``any-app``)."""
    if policy.apps is None and not policy.any_app:
        return [
            f"{what} names no app measurement that may receive it (its owner pushes it "
            f"with --app-measurement, or a dataset key with --any-app)"
        ]
    reasons = policy.refusals(
        measurement=order.app_measurement, requester=order.requester, workerpool=order.workerpool
    )
    return [f"{what}: {r}" for r in reasons]


def _result_key_problems(
    ref: SecretRef, pinned: str, found: Mapping[SecretRef, StoredSecret]
) -> list[str]:
    stored = found.get(ref)
    if stored is None:
        return [f"requester {ref.owner} has no result-encryption key"]
    if result_key_sha256(stored.value) != pinned:
        return ["the requester's result-encryption key is not the one the task order pins"]
    return []
