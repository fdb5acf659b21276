"""An attestation request as the wire gives it: evidence, enclave keys, the service, the
worker and the target (a session version or a task lease), each field checked before
anything is read.

Every string of a request that can reach the audit log is bounded and validated here:
the owner as a wallet address, names by the name rule, the hash and task id as hex, the
worker as a wallet address (a task's) or a host name. An entry therefore never holds
text a caller chose freely.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from confide.attestation.evidence import Evidence
from confide.attestation.nonces import NONCE_BYTES
from confide.attestation.verifier import EnclaveBinding
from confide.crypto.sealing import session_subject
from confide.crypto.wallet import normalise_address
from confide.errors import AuthError, ConfideError
from confide.names import NAME

MAX_EVIDENCE_BYTES = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-fA-F]*")
_NAME = NAME
_TASK_ID = re.compile(r"0x[0-9a-f]{64}")
_LEASE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# A session's worker is not authenticated (it is bound into the evidence, and recorded
# with a grant or refusal): a wallet address or a host name, nothing else.
_WORKER = re.compile(r"[A-Za-z0-9_.:-]{0,128}")
_FIELDS = frozenset(
    {"evidence", "nonce", "x25519_public", "ed25519_public", "service", "worker", "session", "task"}
)


class AttestRequestError(ConfideError):
    """A malformed attestation request (HTTP 400)."""


class AttestationRefusedError(ConfideError):
    """Attestation or release refused (HTTP 403); the reasons say why, never a value."""

    def __init__(self, *reasons: str) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class TargetNotFoundError(AttestationRefusedError):
    """The session version or task an attestation names does not exist (HTTP 403, as any
    refusal). Refused without an audit entry: the entry would hold only what the caller
    chose, and anyone may ask (a public challenge is all it takes)."""


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

    def label(self) -> str:
        """The subject of the request's audit entries (a session's hash shortened)."""
        if isinstance(self.target, SessionTarget):
            target = self.target
            return f"session {target.owner}/{target.name}@{target.hash[:16]}"
        return f"task {self.target.task_id}"

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
        unknown = sorted(set(data) - _FIELDS)
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
            raise AttestRequestError(
                "worker is a wallet address or a host name: at most 128 of A-Z a-z 0-9 _ . : -"
            )
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
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise AttestRequestError("task.id is 0x and 64 lower-case hex characters")
    if not isinstance(lease, str) or not _LEASE.fullmatch(lease):
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
    if not _HEX.fullmatch(value):  # bytes.fromhex would skip spaces: a shorter value
        raise error(f"{where} is not hex")
    return bytes.fromhex(value)


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AttestRequestError(f"{where} is not base64") from None
