"""What an attestation request may carry: every string that can reach the audit log is
bounded and checked when the request is read, each refusal naming its field."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from confide.sms.attest import (
    AttestRequest,
    AttestRequestError,
    SessionTarget,
    TaskTarget,
    hex_field,
)

OWNER = "0x" + "ab" * 20
WORKER = "0x" + "cd" * 20


def _body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "evidence": {"tee": "sim", "data": base64.b64encode(b"e").decode()},
        "nonce": "00" * 32,
        "x25519_public": "11" * 32,
        "ed25519_public": "22" * 32,
        "service": "app",
        "worker": "host-1",
        "session": {"owner": OWNER, "name": "cubic", "hash": "33" * 32},
    }
    body.update(fields)
    return body


@pytest.mark.parametrize(
    "worker", ["", "host-1", "worker-7.example.org:8443", "::1", WORKER, "h" * 128]
)
def test_a_sessions_worker_is_an_address_or_a_host_name(worker: str) -> None:
    request = AttestRequest.from_json(_body(worker=worker))
    assert request.worker == worker  # bound into the evidence as given
    assert request.target == SessionTarget(OWNER, "cubic", "33" * 32)


@pytest.mark.parametrize("worker", ["h" * 129, "host 1", "host<1>", "a/b", "é", "x\n", 7])
def test_any_other_worker_is_refused(worker: Any) -> None:
    with pytest.raises(AttestRequestError, match="worker is a wallet address or a host name"):
        AttestRequest.from_json(_body(worker=worker))


def test_a_tasks_worker_is_a_wallet_address() -> None:
    task = {"id": "0x" + "44" * 32, "lease_token": "lease-1"}
    request = AttestRequest.from_json(
        _body(session=None, task=task, worker=WORKER.upper().replace("0X", "0x"))
    )
    assert request.worker == WORKER and request.target == TaskTarget(task["id"], "lease-1")
    assert request.label() == f"task {task['id']}"
    with pytest.raises(AttestRequestError, match="worker is not a wallet address"):
        AttestRequest.from_json(_body(session=None, task=task, worker="host-1"))


@pytest.mark.parametrize(
    ("session", "reason"),
    [
        ({"owner": "alice", "name": "cubic", "hash": "33" * 32}, "session.owner"),
        ({"owner": OWNER, "name": "n" * 65, "hash": "33" * 32}, "session.name is 1 to 64"),
        ({"owner": OWNER, "name": "a b", "hash": "33" * 32}, "session.name is 1 to 64"),
        ({"owner": OWNER, "name": "cubic", "hash": "AB" * 32}, "session.hash is 64 lower-case"),
        ({"owner": OWNER, "name": "cubic", "hash": "33" * 32, "x": 1}, "session is"),
    ],
)
def test_a_session_target_is_checked(session: dict[str, Any], reason: str) -> None:
    with pytest.raises(AttestRequestError, match=reason):
        AttestRequest.from_json(_body(session=session))


def test_the_audit_subject_is_built_from_checked_fields() -> None:
    request = AttestRequest.from_json(_body())
    assert request.label() == f"session {OWNER}/cubic@{'33' * 8}"
    assert request.subject == f"{OWNER}/cubic@{'33' * 32}"


def test_a_hex_field_is_hex_digits_only() -> None:
    """bytes.fromhex skips spaces, so a field of the right length with spaces in it would
    decode to fewer bytes than the field promises."""
    assert hex_field("ab" * 32, 32, "key") == b"\xab" * 32
    spaced = "ab " * 21 + "a"  # 64 characters, 21 bytes once the spaces are skipped
    with pytest.raises(AttestRequestError, match="key is not hex"):
        hex_field(spaced, 32, "key")
