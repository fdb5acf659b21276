"""Attestation and configuration delivery: the only way a secret leaves the sms.

An enclave asks for a challenge (a nonce row, single use, 60 s), makes evidence whose
report data binds the nonce, its two public keys, this sms, the session hash or task id,
the service and the worker (DESIGN.md, "Identities"), and posts it. The sms judges it by
the effective policy — the session's or the task order's, intersected with the release
policy of every secret it would release — and only then builds the configuration, seals
it with HPKE to the enclave's X25519 key, signs the sealed blob with its token key and
records the grant, the released secrets (by version) and, for a task, the lease it
used, in one transaction with the audit entry. A refusal is audited with its reasons and
says them; nothing secret is in a refusal or a log.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, select, true
from sqlalchemy.exc import IntegrityError

from confide.attestation.evidence import Evidence
from confide.attestation.measurement import Measurement
from confide.attestation.nonces import NONCE_BYTES, NONCE_USED
from confide.attestation.policy import Policy, parse_tdx_pins
from confide.attestation.token import DEFAULT_TTL_SECONDS
from confide.attestation.verifier import EnclaveBinding, Verdict, Verifier, verify_attestation
from confide.crypto.result_key import result_key_sha256
from confide.crypto.sealing import (
    SEALED_CONFIG_LABEL,
    seal_for_enclave,
    sealed_document,
    sealed_payload,
    sealing_info,
    session_subject,
    signed_sealed_message,
)
from confide.crypto.wallet import normalise_address
from confide.db import audit
from confide.db.direct import DirectStatement, InsertRows
from confide.db.engine import reading
from confide.db.schema import attestations, secrets, task_releases, volume_tags
from confide.db.stores import DatabaseNonceStore, check_length
from confide.errors import AttestationError, AuthError, ConfideError
from confide.sms.registry import AppRecord
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secrets import (
    BATCH,
    SecretExistsError,
    SecretNotFoundError,
    SecretRef,
    StoredSecret,
    batch_params,
    batches,
    checked,
    key_of,
    latest_rows,
    result_key_ref,
)
from confide.sms.service import Sms
from confide.sms.sessions import (
    StoredSession,
    session_secret_ref,
    successor_exists,
    volume_key_ref,
)
from confide.sms.tasks import TaskOrder, TaskOrderError

CONFIG_FORMAT = "confide-config-v1"
_RELEASED = "the task's secrets were already released for this lease"
MAX_EVIDENCE_BYTES = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET_REF = re.compile(r"\$\$confide:secrets:([A-Za-z0-9_-]{1,64})\$\$")
_WORKER = re.compile(r"[\x21-\x7e]{0,128}")


class AttestRequestError(ConfideError):
    """A malformed attestation request (HTTP 400)."""


class AttestationRefusedError(ConfideError):
    """Attestation or release refused (HTTP 403); the reasons say why, never a value."""

    def __init__(self, *reasons: str) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class SessionTarget:
    owner: str
    name: str
    hash: str


@dataclass(frozen=True)
class TaskTarget:
    task_id: str
    lease_token: str


@dataclass(frozen=True)
class AttestRequest:
    evidence: Evidence = field(repr=False)
    nonce: bytes
    x25519_public: bytes
    ed25519_public: bytes
    service: str
    worker: str
    target: SessionTarget | TaskTarget

    @property
    def subject(self) -> str:
        """What report data, HPKE info and the token bind: ``owner/name@hash`` for a session
        (a hash alone does not say whose session: two owners may hold equal documents),
        the task id for a task."""
        if isinstance(self.target, SessionTarget):
            return session_subject(self.target.owner, self.target.name, self.target.hash)
        return self.target.task_id

    def binding(self, sms_id: str) -> EnclaveBinding:
        return EnclaveBinding(
            x25519_public=self.x25519_public,
            ed25519_public=self.ed25519_public,
            sms_id=sms_id,
            subject=self.subject,
            service=self.service,
            worker=self.worker,
        )

    @classmethod
    def from_json(cls, data: Any) -> AttestRequest:
        if not isinstance(data, dict):
            raise AttestRequestError("the body is a JSON object")
        allowed = {
            "evidence",
            "nonce",
            "x25519_public",
            "ed25519_public",
            "service",
            "worker",
            "session",
            "task",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise AttestRequestError(f"unknown fields {unknown}")
        evidence = data.get("evidence")
        if not isinstance(evidence, dict) or set(evidence) != {"tee", "data"}:
            raise AttestRequestError('evidence is {"tee": "sim|sgx|tdx", "data": base64}')
        tee, blob = evidence["tee"], evidence["data"]
        if tee not in ("sim", "sgx", "tdx") or not isinstance(blob, str):
            raise AttestRequestError('evidence is {"tee": "sim|sgx|tdx", "data": base64}')
        if len(blob) > MAX_EVIDENCE_BYTES * 4 // 3 + 4:
            raise AttestRequestError(f"evidence is at most {MAX_EVIDENCE_BYTES} bytes")
        service = data.get("service")
        if not isinstance(service, str) or not _NAME.fullmatch(service):
            raise AttestRequestError("service is a name of 1 to 64 of A-Z a-z 0-9 _ -")
        worker = data.get("worker", "")
        if not isinstance(worker, str) or not _WORKER.fullmatch(worker):
            raise AttestRequestError("worker is at most 128 printable ASCII characters")
        session, task = data.get("session"), data.get("task")
        if (session is None) == (task is None):
            raise AttestRequestError("name exactly one of session and task")
        target = _session_target(session) if session is not None else _task_target(task)
        if isinstance(target, TaskTarget):
            worker = _address(worker, "worker")
        return cls(
            evidence=Evidence(tee, _b64(blob, "evidence.data")),
            nonce=hex_field(data.get("nonce"), NONCE_BYTES, "nonce"),
            x25519_public=hex_field(data.get("x25519_public"), 32, "x25519_public"),
            ed25519_public=hex_field(data.get("ed25519_public"), 32, "ed25519_public"),
            service=service,
            worker=worker,
            target=target,
        )


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


@dataclass
class _Plan:
    """A release being prepared: the policy so far, the configuration, what is released."""

    policy: Policy
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # holds secret values
    released: list[str] = field(default_factory=list)  # secret labels with versions
    versions: list[tuple[SecretRef, int]] = field(default_factory=list)  # re-checked at grant
    scope: str = ""
    audience: str = ""
    session: StoredSession | None = None  # the version released from (a session target)


class _NonceGoneError(Exception):
    """The nonce was used up by a concurrent request between the check and the write."""


@dataclass(eq=False)
class PendingGrant:
    """An attestation verified and sealed, waiting for its transaction
    (:meth:`Attestations.commit`). Compared by identity: each is one request."""

    request: AttestRequest
    plan: _Plan = field(repr=False)
    verdict: Verdict
    now: int
    jti: str
    info: bytes
    fresh: list[tuple[dict[str, Any], bytes]] = field(repr=False)  # new output volume keys
    sealed: _Sealed = field(repr=False)


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


SHAPES_KEPT = 1024  # session services whose shape an Attestations remembers


@dataclass(frozen=True)
class _ServiceShape:
    """One service of one session version, as an attestation uses it: its policy, the
    session secrets it references and the volumes it may use, with their keys' refs."""

    service: dict[str, Any] = field(repr=False)
    policy: Policy
    refs: Mapping[str, SecretRef]  # secret name -> where the session keeps it (sorted)
    volumes: list[dict[str, Any]]
    keys: Mapping[str, SecretRef]  # volume name -> where its key is kept

    @classmethod
    def of(cls, head: StoredSession, name: str) -> _ServiceShape:
        document = head.document
        service = next((s for s in document["services"] if s["name"] == name), None)
        if service is None:
            raise AttestationRefusedError(
                f"service {name!r} is not in session {head.owner}/{head.name}"
            )
        security = document["security"]
        policy = Policy(
            measurements=frozenset(Measurement.parse(m) for m in service["measurements"]),
            tolerate=frozenset(security["tolerate"]),
            ignore_advisories=frozenset(security["ignore_advisories"]),
            tdx_pins=parse_tdx_pins(service.get("tdx"), f"service {name!r}"),
        )
        refs = {
            secret: session_secret_ref(head.owner, head.name, head.hash, secret)
            for secret in sorted(_references(service))
        }
        volumes = [v for v in document["volumes"] if v["name"] in service["volumes"]]
        keys = {v["name"]: volume_key_ref(head.owner, head.name, v["name"]) for v in volumes}
        return cls(service, policy, refs, volumes, keys)


def _volumes(
    volumes: list[dict[str, Any]],
    keys: Mapping[str, SecretRef],
    found: Mapping[SecretRef, StoredSecret],
    tags: Mapping[str, str | None],
) -> list[dict[str, Any]]:
    """Each volume the service may use (``volumes``), with its key (read into ``found``)
    and the tag it must have (``tags``).

    An output volume's key is made on first use; an input volume must have been pushed by
    the session's owner (its key is theirs).
    """
    result = []
    for volume in volumes:
        stored = found.get(keys[volume["name"]])
        if stored is None and volume["mode"] != "output":
            raise AttestationRefusedError(
                f"input volume {volume['name']!r} has no key yet: its owner pushes it with "
                f"the volume"
            )
        result.append(
            {
                "name": volume["name"],
                "mode": volume["mode"],
                "path": volume["path"],
                # None: made and stored when the grant is recorded
                "key": None if stored is None else stored.value.hex(),
                "tag": tags[volume["name"]],
            }
        )
    return result


class Attestations:
    def __init__(
        self, sms: Sms, verifiers: Mapping[str, Verifier], nonces: DatabaseNonceStore
    ) -> None:
        """``nonces`` keeps its rows in ``sms``'s database (checked and used up there)."""
        self.sms = sms
        self.verifiers = verifiers
        self.nonces = nonces
        self._shapes: dict[tuple[str, str, str, str], _ServiceShape] = {}

    def challenge(self, now: int) -> bytes:
        return self.nonces.issue(now)

    def attest(self, request: AttestRequest, now: int, signer: str | None = None) -> Grant:
        """Verify and release, or raise AttestationRefusedError naming its reasons (every
        one the policy finds in the evidence; of the plan's checks, the first that fails:
        :meth:`check_order` names them all for a task before it is queued): a
        :meth:`prepare` and a :meth:`commit` of that grant alone."""
        pending = self.prepare(request, now, signer)
        return self.commit([pending])[0].result()

    def prepare(self, request: AttestRequest, now: int, signer: str | None = None) -> PendingGrant:
        """Everything of an attestation before its transaction: the plan, the verdict and
        the sealed configuration. A refusal is audited here (AttestationRefusedError).

        The nonce is checked first: a request without a live challenge costs a read or two
        (for a session, the nonce is read with its plan's other rows), takes no lock and
        leaves no trace (so the public endpoint cannot flood the audit log). With one,
        the nonce is used up in the transaction that records the outcome, the grant or an
        audited refusal (one ``DELETE … RETURNING``), so it is used once: of two requests
        racing with one nonce, one is recorded and the other refused as a replay, with no
        audit entry. A request that fails otherwise (the database unavailable) leaves it
        live: nothing was recorded.
        """
        refusal: AttestationRefusedError | None = None
        with reading(self.sms.engine) as connection:  # one connection for the plan's reads
            try:
                if isinstance(request.target, SessionTarget):
                    plan = self._session_plan(request, request.target, connection, now)
                else:
                    self.nonces.peek(connection, request.nonce, now)
                    plan = self._task_plan(request, request.target, signer, connection)
            except AttestationError as exc:  # the nonce is not live: nothing audited
                raise AttestationRefusedError(str(exc)) from None
            except AttestationRefusedError as refused:
                # A session's request may be refused before its nonce was read (a version
                # that is not current, a service not in it): read it now, so that one
                # without a live nonce ends here, having taken no lock (the refusal's
                # transaction, which takes the audit log's, then uses the nonce up).
                if isinstance(request.target, SessionTarget):
                    try:
                        self.nonces.peek(connection, request.nonce, now)
                    except AttestationError as exc:
                        raise AttestationRefusedError(str(exc)) from None
                refusal = refused
        if refusal is not None:
            self._refuse(request, now, refusal.reasons)
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
            self._refuse(request, now, tuple(reasons))
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
            sealed = self._seal(request, plan, verdict, info, jti, now)
        except AttestationRefusedError as exc:
            self._refuse(request, now, exc.reasons)
            raise
        return PendingGrant(request, plan, verdict, now, jti, info, fresh, sealed)

    def _sim_platform_reasons(
        self, request: AttestRequest, plan: _Plan, platform: str | None, signer: str | None
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

    # -- sessions ---------------------------------------------------------------------

    def _session_plan(
        self, request: AttestRequest, target: SessionTarget, connection: Connection, now: int
    ) -> _Plan:
        sessions = self.sms.sessions
        # A version read before is not read again: whether it is still current is checked
        # in the grant's transaction (the recheck), where it must be checked anyway.
        head = sessions.known_version(target.owner, target.name, target.hash)
        if head is None:
            head = sessions.current_version(target.owner, target.name, target.hash, connection)
        if head is None:
            raise AttestationRefusedError(
                f"session {target.owner}/{target.name} has no current version {target.hash} "
                f"(the enclave was started for another version, or another session)"
            )
        shape = self._shape(head, request.service)
        service = shape.service
        plan = _Plan(
            shape.policy,
            scope=f"{target.owner}/{target.name}",
            audience=f"session:{target.owner}/{target.name}",
            session=head,
        )
        refs, keys = shape.refs, shape.keys
        tags, found = self._plan_read(head, shape, request.nonce, now, connection)
        values = {
            name: self._session_secret(ref, found, plan, f"session secret {name!r}")
            for name, ref in refs.items()
        }
        plan.config = {
            "format": CONFIG_FORMAT,
            "session": {"owner": target.owner, "name": target.name, "hash": head.hash},
            "service": request.service,
            "command": _inject(service["command"], values),
            "pwd": service["pwd"],
            "environment": {k: _inject(v, values) for k, v in service["environment"].items()},
            "volumes": _volumes(shape.volumes, keys, found, tags),
        }
        return plan

    def _plan_read(
        self,
        head: StoredSession,
        shape: _ServiceShape,
        nonce: bytes,
        now: int,
        connection: Connection,
    ) -> tuple[dict[str, str | None], dict[SecretRef, StoredSecret]]:
        """The nonce (AttestationError unless it is live), the volumes' tags and every
        secret the service may get (its own and its volumes' keys), in one statement
        (up to BATCH of each; more take a statement per BATCH). A secret is decrypted only
        once the nonce is found live."""
        check_length(nonce)
        volumes = [v["name"] for v in shape.volumes]
        wanted = checked([*shape.refs.values(), *shape.keys.values()])
        if len(wanted) > BATCH or len(volumes) > BATCH:  # rare: the nonce read first
            self.nonces.peek(connection, nonce, now)
            tags = current_tags(head.owner, head.name, volumes, connection)
            return tags, self.sms.secrets.release_many(wanted, connection)
        params: dict[str, Any] = {"owner": head.owner, "session": head.name, "nonce": nonce}
        params.update({f"volume_{i}": volume for i, volume in enumerate(volumes)})
        params.update(batch_params(wanted))
        rows = _plan_read_of(len(wanted), len(volumes)).all(connection, params)
        first = rows[0]  # the nonce and the tags, on every row (one without secrets too)
        expires = first.nonce_expires
        DatabaseNonceStore.require_live(None if expires is None else int(expires), now)
        tags = {
            volume: None if first[i] is None else str(first[i]) for i, volume in enumerate(volumes)
        }
        return tags, self.sms.secrets.open_rows(wanted, rows if wanted else [])

    def _shape(self, head: StoredSession, name: str) -> _ServiceShape:
        """What a session version says of one of its services, worked out once per
        version (a version's document never changes); AttestationRefusedError if the
        version has no such service."""
        key = (head.owner, head.name, head.hash, name)
        shape = self._shapes.get(key)
        if shape is None:
            shape = _ServiceShape.of(head, name)
            if len(self._shapes) >= SHAPES_KEPT:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    # -- tasks ------------------------------------------------------------------------

    def _task_plan(
        self,
        request: AttestRequest,
        target: TaskTarget,
        signer: str | None,
        connection: Connection,
    ) -> _Plan:
        order, app = self._check_claim(request, target, signer)
        plan = _Plan(_order_policy(order), scope=target.task_id, audience=f"task:{target.task_id}")
        env: dict[str, str] = {"IEXEC_TASK_ID": target.task_id}
        developer = SecretRef(app.owner, "app", "1", subject=app.address)
        mapped = [
            (index, SecretRef(order.requester, "requester", name)) for index, name in order.secrets
        ]
        dataset = None if order.dataset is None else self.sms.registry.dataset(order.dataset)
        dataset_ref = (
            None
            if dataset is None
            else SecretRef(dataset.owner, "dataset", "key", subject=dataset.address)
        )
        result_ref = None if order.result_key is None else result_key_ref(order.requester)
        # Every secret the task may get, in one read; each is checked below.
        found = self.sms.secrets.release_many(
            [
                developer,
                *(ref for _, ref in mapped),
                *(ref for ref in (dataset_ref, result_ref) if ref is not None),
            ],
            connection,
        )
        stored = self._release(developer, plan, found)  # optional: None if not pushed
        if stored is not None:
            what = "the app developer secret"
            self._restricted(stored.policy, order, what)
            value = _utf8(stored.value, what)
            env["IEXEC_APP_DEVELOPER_SECRET"] = env["IEXEC_APP_DEVELOPER_SECRET_1"] = value
        missing = []
        for index, ref in mapped:
            secret = self._release(ref, plan, found)
            if secret is None:
                missing.append(ref.name)
                continue
            env[f"IEXEC_REQUESTER_SECRET_{index}"] = _utf8(
                secret.value, f"requester secret {ref.name!r}"
            )
        if missing:
            raise AttestationRefusedError(
                f"requester secret(s) {', '.join(repr(m) for m in missing)} of "
                f"{order.requester} do not exist"
            )
        dataset_key = None
        if order.dataset is not None:
            if dataset_ref is None:
                raise AttestationRefusedError(f"unknown dataset {order.dataset}")
            dataset_key = self._dataset_key(dataset_ref, order, plan, found)
        plan.config = {
            "format": CONFIG_FORMAT,
            "task": {"id": target.task_id, "app": order.app, "requester": order.requester},
            "service": request.service,
            "environment": env,
            "dataset": None
            if order.dataset is None
            else {"address": order.dataset, "key": dataset_key},
            "result_encryption_key": None
            if result_ref is None or order.result_key is None
            else self._result_key(result_ref, order.result_key, found),
        }
        return plan

    def _check_claim(
        self, request: AttestRequest, target: TaskTarget, signer: str | None
    ) -> tuple[TaskOrder, AppRecord]:
        """The order is the requester's, for this sms, and this worker holds the lease."""
        registry = self.sms.registry
        record = registry.task(target.task_id)
        if record is None or record.task_id != target.task_id:
            raise AttestationRefusedError(f"unknown task {target.task_id}")
        order = record.order
        # Who asks, first: a wallet outside the task's workerpool, or without its lease,
        # learns nothing more of the order (its signature, its sms) from the refusal.
        if signer != request.worker:
            raise AttestationRefusedError(
                "a task's attestation is signed by the worker it names"
                + (f" (signed by {signer})" if signer else " (it is not signed)")
            )
        if not registry.is_member(order.workerpool, request.worker):
            raise AttestationRefusedError(
                f"worker {request.worker} is not a member of workerpool {order.workerpool}"
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
        try:
            order.check_signature(record.signature)
        except TaskOrderError as exc:
            raise AttestationRefusedError(str(exc)) from None
        if order.sms_key != self.sms.tokens.public_key().hex():
            raise AttestationRefusedError("the task order pins another sms key: not released here")
        app = registry.app(order.app)
        if app is None:
            raise AttestationRefusedError(f"unknown app {order.app}")
        if order.app_measurement not in app.measurements:
            raise AttestationRefusedError(
                f"the order's app measurement {order.app_measurement.short()} is not one "
                f"the app's owner registered"
            )
        return order, app

    def _dataset_key(
        self,
        ref: SecretRef,
        order: TaskOrder,
        plan: _Plan,
        found: Mapping[SecretRef, StoredSecret],
    ) -> str:
        stored = self._release(ref, plan, found)
        if stored is None:
            raise AttestationRefusedError(f"the key of dataset {ref.subject} does not exist")
        self._restricted(stored.policy, order, f"dataset {ref.subject}")
        return base64.b64encode(stored.value).decode()

    @staticmethod
    def _result_key(ref: SecretRef, pinned: str, found: Mapping[SecretRef, StoredSecret]) -> str:
        stored = found.get(ref)
        if stored is None:
            raise AttestationRefusedError(f"requester {ref.owner} has no result-encryption key")
        key = stored.value
        if result_key_sha256(key) != pinned:
            raise AttestationRefusedError(
                "the requester's result-encryption key is not the one the task order pins"
            )
        return key.hex()

    def check_order(self, order: TaskOrder, signature: str) -> list[str]:
        """Everything that would stop this order's release, found before the task is
        queued (iExec fails late and silently): each problem names what is wrong."""
        problems: list[str] = []
        signed = True
        try:
            order.check_signature(signature)
        except TaskOrderError as exc:
            problems.append(str(exc))
            signed = False
        if order.sms_key != self.sms.tokens.public_key().hex():
            problems.append("the order pins another sms key")
        app = self.sms.registry.app(order.app)
        if app is None:
            problems.append(f"unknown app {order.app}")
        elif order.app_measurement not in app.measurements:
            problems.append(
                f"app measurement {order.app_measurement.short()} is not one the app's "
                f"owner registered"
            )
        dataset = None if order.dataset is None else self.sms.registry.dataset(order.dataset)
        if order.dataset is not None and dataset is None:
            problems.append(f"unknown dataset {order.dataset}")
        # Every secret the order names: the requester's mapped ones (``labels``), and the
        # app developer secret and the dataset key (``restricted`` by their owners).
        labels = {
            SecretRef(order.requester, "requester", name): f"requester secret {name!r}"
            for _, name in order.secrets
        }
        restricted: dict[SecretRef, str] = {}
        if app is not None:
            developer = SecretRef(app.owner, "app", "1", subject=app.address)
            restricted[developer] = "the app developer secret"  # optional
        dataset_key = None
        if dataset is not None:
            dataset_key = SecretRef(dataset.owner, "dataset", "key", subject=dataset.address)
            restricted[dataset_key] = f"dataset {dataset.address}"
        result_ref = None if order.result_key is None else result_key_ref(order.requester)
        # Values are opened (their policies authenticated) only for an order its requester
        # signed; otherwise existence alone is read, as a HEAD tells it (and the result
        # key, a public key).
        opened = [*labels, *restricted] if signed else []
        with reading(self.sms.engine) as connection:
            found = self.sms.secrets.release_many(
                [*opened, *([] if result_ref is None else [result_ref])], connection
            )
        present = set(found) if signed else self.sms.secrets.exists_many([*labels, *restricted])
        missing = [ref.name for ref in labels if ref not in present]
        if missing:
            problems.append(
                f"requester secret(s) {', '.join(repr(m) for m in missing)} of "
                f"{order.requester} do not exist"
            )
        if dataset_key is not None and dataset_key not in present:
            problems.append(f"dataset {order.dataset} has no key")
        if result_ref is not None and order.result_key is not None:
            try:
                self._result_key(result_ref, order.result_key, found)
            except AttestationRefusedError as exc:
                problems.extend(exc.reasons)
        if signed:  # the requester asks: what each secret's owner allows, for this order
            problems += self._policy_problems(order, labels | restricted, restricted, found)
        return problems

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
        intersection)."""
        ordered = _order_policy(order)
        problems: list[str] = []
        for ref, what in labels.items():
            stored = found.get(ref)
            if stored is None:
                continue  # missing ones are reported apart (an app secret is optional)
            allowed = stored.policy.to_policy(allow_sim=self.sms.config.allow_sim)
            problems += _tee_problems(ordered.intersect(allowed), what)
            if ref in restricted:
                try:
                    self._restricted(stored.policy, order, what)
                except AttestationRefusedError as exc:
                    problems.extend(exc.reasons)
        return problems

    # -- common -----------------------------------------------------------------------

    def _release(
        self, ref: SecretRef, plan: _Plan, found: Mapping[SecretRef, StoredSecret]
    ) -> StoredSecret | None:
        """The secret read into ``found`` (None if it does not exist), its release policy
        added to the plan's, its version recorded for the audit entry and the grant's
        recheck."""
        stored = found.get(ref)
        if stored is None:
            return None
        plan.policy = plan.policy.intersect(
            stored.policy.to_policy(allow_sim=self.sms.config.allow_sim)
        )
        plan.released.append(f"{ref.label()}@{stored.version}")
        plan.versions.append((ref, stored.version))
        return stored

    @staticmethod
    def _session_secret(
        ref: SecretRef, found: Mapping[SecretRef, StoredSecret], plan: _Plan, what: str
    ) -> str:
        # A session's own secrets follow the session's policy (nothing to intersect).
        stored = found.get(ref)
        if stored is None:  # the session's document declares every secret it references
            raise SecretNotFoundError(f"secret {ref.label()} does not exist")
        plan.released.append(f"{ref.label()}@{stored.version}")
        plan.versions.append((ref, stored.version))
        return _utf8(stored.value, what)

    @staticmethod
    def _restricted(policy: ReleasePolicy, order: TaskOrder, what: str) -> None:
        """App and dataset secrets go only to app measurements their owner signed for:
        the registry (the hub) is not trusted to choose the code that receives them."""
        if policy.apps is None:
            raise AttestationRefusedError(
                f"{what} names no app measurement that may receive it (its owner pushes it "
                f"with --app-measurement)"
            )
        reasons = policy.refusals(
            measurement=order.app_measurement,
            requester=order.requester,
            workerpool=order.workerpool,
        )
        if reasons:
            raise AttestationRefusedError(*(f"{what}: {r}" for r in reasons))

    def _refuse(self, request: AttestRequest, now: int, reasons: tuple[str, ...]) -> None:
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
            audit.append_now(self.sms.engine, also=use_nonce, **_refusal(request, now, reasons))
        except _NonceGoneError:
            raise AttestationRefusedError(NONCE_USED) from None

    def _recheck(
        self,
        connection: Connection,
        request: AttestRequest,
        plan: _Plan,
        reads: dict[Any, _RecheckReads] | None = None,
    ) -> tuple[audit.Head, str | None]:
        """Inside the grant's transaction, after the audit log's lock: nothing the plan
        read has moved on since (a secret rotated, the session updated, the lease
        re-claimed or already used while the evidence was being verified), or the reason
        it has. Otherwise the release would be of a superseded state. A secret or session
        write appends to the audit log in its transaction too, so it either committed
        before the lock was taken (and is seen here) or comes after this grant. A task's
        lease lives in the registry (the hub), not under this lock: it is checked here,
        and one re-claimed after the check but before the commit is not seen (the window
        is the commit's). One statement (per BATCH secrets) reads it all, with the log's
        head for the entry that follows; kept in ``reads`` (a batch's) for the next grant
        that would read the same."""
        target = request.target
        refs = [r for r, _ in plan.versions]
        key = (target, tuple(refs))
        found = None if reads is None else reads.get(key)
        if found is None:
            found = _recheck_reads(connection, refs, target)
            if reads is not None:
                reads[key] = found
        current, superseded, released, head = found
        for (ref, version), now_version in zip(plan.versions, current, strict=True):
            if now_version != version:
                return head, f"secret {ref.label()} changed while attesting: attest again"
        if isinstance(target, SessionTarget):
            if superseded:
                return head, (
                    f"session {target.owner}/{target.name} version {target.hash} is no "
                    f"longer current (the session was updated): start the enclave for the "
                    f"current version"
                )
            return head, None
        return head, _RELEASED if released else self._claim_moved(request, target)

    def _claim_moved(self, request: AttestRequest, target: TaskTarget) -> str | None:
        """Why the task's claim no longer holds (the hub's, not under the audit lock):
        the lease re-claimed, or the worker removed from the task's workerpool."""
        registry = self.sms.registry
        record = registry.task(target.task_id)
        if (
            record is None
            or record.lease_token != target.lease_token
            or record.worker.lower() != request.worker
        ):
            return "the task's lease changed while attesting"
        if not registry.is_member(record.order.workerpool, request.worker):
            return (
                f"worker {request.worker} left workerpool {record.order.workerpool} while attesting"
            )
        return None

    def commit(self, pending: Sequence[PendingGrant]) -> list[Outcome]:
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
        try:
            return self._commit(pending)
        except (IntegrityError, SecretExistsError):
            if len(pending) > 1:  # each in a transaction of its own, failing on its own
                return [self._commit_alone(p) for p in pending]
            request = pending[0].request
            if isinstance(request.target, TaskTarget):
                reason = _RELEASED
            else:  # two enclaves made the first key of an output volume at once
                reason = "a concurrent attestation made an output volume's key: attest again"
            try:
                self._refuse(request, pending[0].now, (reason,))
            except AttestationRefusedError as exc:
                return [Outcome(refused=exc)]
            return [Outcome(refused=AttestationRefusedError(reason))]

    def _commit_alone(self, pending: PendingGrant) -> Outcome:
        """One grant of a batch that a constraint stopped, recorded in its own transaction.
        A database error here is this grant's alone (its caller is answered 503): the
        grants recorded before it stay recorded and are answered."""
        try:
            return self.commit([pending])[0]
        except Exception as exc:  # the database: only this grant's answer
            return Outcome(failed=exc)

    def _commit(self, pending: Sequence[PendingGrant]) -> list[Outcome]:
        """One transaction: the lock, every nonce used up in one statement, each grant's
        recheck, then its rows and entries, written together at the end."""
        outcomes: list[Outcome] = []
        with self.sms.engine.begin() as connection:
            audit.lock(connection)  # first: what each grant reads below stays true to COMMIT
            expiries = self.nonces.take_many(connection, [p.request.nonce for p in pending])
            writes = _Writes(connection)
            used: set[bytes] = set()
            leases: set[tuple[str, str]] = set()
            # Grants of one session (or task) with the same secrets read the same rows:
            # read once per batch, until a grant stores an output volume's key.
            reads: dict[Any, _RecheckReads] = {}
            for grant in pending:
                request, now = grant.request, grant.now
                expiry = expiries.get(request.nonce)
                if expiry is None or now >= expiry or request.nonce in used:
                    # a concurrent request with this nonce won (or it expired)
                    outcomes.append(Outcome(refused=AttestationRefusedError(NONCE_USED)))
                    continue
                used.add(request.nonce)
                head, reason = self._recheck(connection, request, grant.plan, reads)
                target = request.target
                if reason is None and isinstance(target, TaskTarget):
                    lease = (target.task_id, target.lease_token)
                    reason = _RELEASED if lease in leases else None  # earlier in this batch
                    leases.add(lease)
                if reason is not None:
                    writes.log.append(head=head, **_refusal(request, now, (reason,)))
                    outcomes.append(Outcome(refused=AttestationRefusedError(reason)))
                    continue
                outcomes.append(Outcome(granted=self._record(writes, grant, head)))
                if grant.fresh:  # a key stored: what the next grants read has changed
                    reads.clear()
            writes.flush()
        return outcomes

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
                sealed = self._seal(request, plan, verdict, pending.info, pending.jti, now)
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
            subject=_subject_label(request),
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

    def _seal(
        self, request: AttestRequest, plan: _Plan, verdict: Verdict, info: bytes, jti: str, now: int
    ) -> _Sealed:
        """The token over the configuration's hash, and both sealed to the enclave."""
        encoded, digest = sealed_document(plan.config)
        token = self.sms.tokens.issue(
            verdict,
            request.binding(self.sms.config.sms_id),
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
        return _Sealed(blob, token, digest)

    def _store_output_keys(
        self,
        connection: Connection,
        plan: _Plan,
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


class _Writes:
    """A batch's rows, written together at its end (one INSERT per table)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.log = audit.Appender(connection)
        self.releases: list[dict[str, Any]] = []
        self.attestations: list[dict[str, Any]] = []

    def flush(self) -> None:
        _INSERT_RELEASES.execute(self.connection, self.releases)
        _INSERT_ATTESTATIONS.execute(self.connection, self.attestations)
        self.log.flush()


@dataclass(frozen=True)
class _Sealed:
    blob: bytes = field(repr=False)
    token: str
    config_hash: str


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise AttestationRefusedError(
            f"{what} is not UTF-8 text, so it cannot be an environment variable"
        ) from None


class _AlreadyConsumed:
    """The nonce store handed to ``verify_attestation``: :meth:`Attestations.attest` has
    checked the nonce itself (first, so refusals without one cost nothing) and uses it up
    in the transaction that records the grant or the refusal."""

    def issue(self, now: float) -> bytes:
        raise AttestationError("not a nonce source")

    def consume(self, nonce: bytes, now: float) -> None:
        del nonce, now


_CONSUMED = _AlreadyConsumed()


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


_RecheckReads = tuple[list[int | None], bool, bool, audit.Head]


def _recheck_reads(
    connection: Connection, refs: Sequence[SecretRef], target: SessionTarget | TaskTarget
) -> _RecheckReads:
    """The current version of each of ``refs``; for a session, whether its version has a
    successor; for a task, whether its lease has been released already; and the audit
    log's head: one statement per BATCH references (the first also reads the rest)."""
    chunks = batches(refs) or [[]]
    versions: list[int | None] = []
    superseded, released, head = False, False, audit.Head(None, None)
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
            released = kind == "task" and bool(row.released)
    return versions, superseded, released, head


def _order_policy(order: TaskOrder) -> Policy:
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


# Built once per shape, values bound at execution, run on the driver (confide.db.direct).
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
    """A session attestation's one read: a row of its volumes' tags and its nonce's
    expiry, joined to the current row of each of ``refs`` secrets that exists (one row
    per secret found; one row, its secret columns NULL, if none is)."""
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
    columns: list[Any] = [
        select(func.max(secrets.c.version)).where(*key_of(i)).scalar_subquery().label(f"v{i}")
        for i in range(count)
    ]
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
    if first:
        columns += audit.head_columns()
    return DirectStatement(select(*columns))


_INSERT_ATTESTATIONS = InsertRows(
    attestations,
    ("jti", "ed25519_public", "subject", "scope", "service", "worker", "expires_at", "created_at"),
)
_INSERT_RELEASES = InsertRows(
    task_releases, ("task_id", "lease_token", "jti", "worker", "released_at")
)


def _references(service: dict[str, Any]) -> set[str]:
    texts = [service["command"], *service["environment"].values()]
    return {name for text in texts for name in _SECRET_REF.findall(text)}


def _inject(text: str, values: Mapping[str, str]) -> str:
    return _SECRET_REF.sub(lambda match: values[match[1]], text)


def _refusal(request: AttestRequest, now: int, reasons: Sequence[str]) -> dict[str, Any]:
    """The audit entry of a refused attestation. The claimed worker is not authenticated
    for a session, so it is detail, not actor."""
    return {
        "at": now,
        "actor": "enclave",
        "action": "attest.refused",
        "subject": _subject_label(request),
        "detail": {
            "service": request.service,
            "tee": request.evidence.tee,
            "worker": request.worker,
            "reasons": list(reasons),
        },
    }


def _subject_label(request: AttestRequest) -> str:
    if isinstance(request.target, SessionTarget):
        return f"session {request.target.owner}/{request.target.name}@{request.target.hash[:16]}"
    return f"task {request.target.task_id}"


def _session_target(value: Any) -> SessionTarget:
    if not isinstance(value, dict) or set(value) != {"owner", "name", "hash"}:
        raise AttestRequestError('session is {"owner": 0x…, "name": …, "hash": 64 hex}')
    name, digest = value["name"], value["hash"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AttestRequestError("session.name is 1 to 64 of A-Z a-z 0-9 _ -")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise AttestRequestError("session.hash is 64 lower-case hex characters")
    return SessionTarget(_address(value["owner"], "session.owner"), name, digest)


def _task_target(value: Any) -> TaskTarget:
    if not isinstance(value, dict) or set(value) != {"id", "lease_token"}:
        raise AttestRequestError('task is {"id": 0x + 64 hex, "lease_token": …}')
    task_id, lease = value["id"], value["lease_token"]
    if not isinstance(task_id, str) or not re.fullmatch(r"0x[0-9a-f]{64}", task_id):
        raise AttestRequestError("task.id is 0x and 64 lower-case hex characters")
    if not isinstance(lease, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", lease):
        raise AttestRequestError("task.lease_token is 1 to 128 of A-Z a-z 0-9 _ . : -")
    return TaskTarget(task_id, lease)


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise AttestRequestError(f"{where} is a wallet address")
    try:
        return normalise_address(value)
    except AuthError:
        raise AttestRequestError(f"{where} is not a wallet address (0x and 40 hex)") from None


def hex_field(
    value: Any, length: int, where: str, error: type[ConfideError] = AttestRequestError
) -> bytes:
    """A request field of exactly ``length`` bytes, given as hex; ``error`` naming it."""
    if not isinstance(value, str) or len(value) != 2 * length:
        raise error(f"{where} is {length} bytes as {2 * length} hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise error(f"{where} is not hex") from None


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AttestRequestError(f"{where} is not base64") from None
