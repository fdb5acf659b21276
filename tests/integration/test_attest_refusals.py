"""Attestations that must be refused, and what a refusal leaves behind: a reason for the
caller always; an audit entry only when it concerns something that exists, and then
only bounded, checked text (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from confide.attestation.evidence import Appraisal, Evidence
from confide.attestation.sim import SimAttester, SimVerifier
from confide.attestation.verifier import EnclaveBinding
from confide.client.sms import SmsClient
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.db import audit, make_engine
from confide.db.schema import audit_log
from confide.db.stores import DatabaseNonceStore, DatabasePlatformRegistry
from confide.errors import AttestationError, AuthError
from confide.sms.attest import (
    AttestationRefusedError,
    Attestations,
    AttestRequest,
    SessionTarget,
)
from confide.sms.secrets import SecretRef
from confide.sms.service import Sms, SmsConfig
from confide.sms.volumes import VolumeTags
from tests.integration.test_attest_sessions import (
    APP,
    OTHER,
    OWNER,
    SESSION,
    push_input,
    report_tag,
    world,
)
from tests.integration.test_attest_tasks import (
    DEVELOPER,
    MEASUREMENT,
    WORKER,
    task_world,
)

JUNK = {"tee": "sim", "data": base64.b64encode(b"not evidence").decode()}


def _audit_rows(database_url: str) -> list[audit.AuditEntry]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return audit.entries(connection)
    finally:
        engine.dispose()


def _attest(base: str, target: dict[str, Any], **fields: Any) -> httpx.Response:
    """``POST /v1/attest`` with a live nonce (a fresh challenge) and junk evidence: what
    anyone can send without a wallet."""
    nonce = httpx.post(f"{base}/v1/attest/challenge").json()["nonce"]
    keys = EnclaveKeys.generate()
    body = {
        "evidence": JUNK,
        "nonce": nonce,
        "x25519_public": keys.x25519_public.hex(),
        "ed25519_public": keys.ed25519_public.hex(),
        "service": "app",
        "worker": "host-1",
        **target,
        **fields,
    }
    return httpx.post(f"{base}/v1/attest", json=body)


def test_an_attestation_for_a_session_that_does_not_exist_is_not_audited(
    tmp_path: Path, database_url: str
) -> None:
    """A public challenge and a made-up session, name or version: refused, the reason
    told to the caller, nothing added to the (unprunable) log."""
    with world(tmp_path, database_url) as w:
        before = len(_audit_rows(database_url))
        for target in (
            w.target(owner=OTHER.address),
            w.target(name="nope"),
            w.target(hash="0" * 64),
        ):
            for _ in range(3):
                answer = _attest(w.base, target)
                assert answer.status_code == 403, answer.text
                assert "has no current version" in answer.json()["detail"]
        assert len(_audit_rows(database_url)) == before
        # Refused evidence for a version that exists is still audited.
        push_input(w, b"\x11" * 32, "aa" * 32)
        before = len(_audit_rows(database_url))
        answer = _attest(w.base, w.target())
        assert answer.status_code == 403 and "sim evidence is malformed" in answer.text
        assert [e.action for e in _audit_rows(database_url)[before:]] == ["attest.refused"]


def test_an_attestation_for_a_task_that_does_not_exist_is_not_audited(
    tmp_path: Path, database_url: str
) -> None:
    with task_world(tmp_path, database_url) as t:
        before = len(_audit_rows(database_url))
        unknown = "0x" + "00" * 32
        for _ in range(3):
            answer = _attest(
                t.base,
                {"task": {"id": unknown, "lease_token": "lease-1"}},
                worker=WORKER.address,
            )
            assert answer.status_code == 403 and f"unknown task {unknown}" in answer.text
        assert len(_audit_rows(database_url)) == before
        # An unsigned request for a task that exists is refused and audited.
        task_id = t.publish(t.order())
        answer = _attest(
            t.base, {"task": {"id": task_id, "lease_token": "lease-1"}}, worker=WORKER.address
        )
        assert answer.status_code == 403 and "signed by the worker it names" in answer.text
        assert [e.action for e in _audit_rows(database_url)[before:]] == ["attest.refused"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"worker": "host<1>"}, "worker is a wallet address or a host name"),
        ({"worker": "a/b"}, "worker is a wallet address or a host name"),
        ({"worker": '"},{"x'}, "worker is a wallet address or a host name"),
        ({"worker": "h" * 129}, "worker is a wallet address or a host name"),
        ({"worker": "hôte"}, "worker is a wallet address or a host name"),
        ({"service": "s" * 65}, "service is a name of 1 to 64"),
        ({"session": {"owner": "alice", "name": "cubic", "hash": "0" * 64}}, "session.owner"),
        ({"session": {"owner": OWNER.address, "name": "n" * 65, "hash": "0" * 64}}, "session.name"),
        ({"session": {"owner": OWNER.address, "name": "c/d", "hash": "0" * 64}}, "session.name"),
        ({"session": {"owner": OWNER.address, "name": "cubic", "hash": "x" * 64}}, "session.hash"),
    ],
)
def test_what_an_audit_entry_would_hold_is_checked_first(
    tmp_path: Path, database_url: str, fields: dict[str, Any], reason: str
) -> None:
    """Every caller-chosen string of an attestation that can reach the audit log (the
    worker, the service, the session's owner, name and hash) is bounded and checked:
    malformed, the request is refused (400) naming the field, and nothing is audited."""
    with world(tmp_path, database_url) as w:
        before = len(_audit_rows(database_url))
        answer = _attest(w.base, w.target(), **fields)
        assert answer.status_code == 400, answer.text
        assert reason in answer.json()["detail"]
        assert len(_audit_rows(database_url)) == before


def test_an_audited_refusal_holds_only_checked_text(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        worker = "worker-7.example.org:8443"
        assert _attest(w.base, w.target(), worker=worker).status_code == 403
        entry = _audit_rows(database_url)[-1]
        assert entry.action == "attest.refused"
        assert entry.subject == f"session {OWNER.address}/cubic@{w.session['hash'][:16]}"
        assert entry.detail["worker"] == worker
        assert len(entry.subject) + len(json.dumps(entry.detail)) < 512


def test_a_sim_platform_speaks_only_for_whoever_registered_it(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        mallory = SigningKey.generate()
        SmsClient(w.base, wallet=OTHER).register_platform(mallory)
        w.platform = mallory
        with pytest.raises(AuthError, match="not registered by the session's owner"):
            w.attest(EnclaveKeys.generate())


def test_a_sim_platform_speaks_only_for_the_worker_that_registered_it(
    tmp_path: Path, database_url: str
) -> None:
    with task_world(tmp_path, database_url) as t:
        stranger = SigningKey.generate()
        SmsClient(t.base, wallet=DEVELOPER).register_platform(stranger)
        t.platform = stranger
        with pytest.raises(AuthError, match="not registered by the worker that signed"):
            t.run(t.publish(t.order()))


def test_a_grant_for_an_old_session_version_cannot_report_tags(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        push_input(w, b"\x11" * 32, "aa" * 32)
        keys = EnclaveKeys.generate()
        w.attest(keys)
        updated = SESSION.replace('version: "1"', f'version: "2"\npredecessor: {w.session["hash"]}')
        w.owner.update_session(OWNER.address, "cubic", updated, {}, "cubic.yml")
        answer = report_tag(w, keys, "output", None, "01" * 32)
        assert answer.status_code == 403 and "no longer current" in answer.text


def test_a_key_that_cannot_be_sealed_to_burns_nothing(tmp_path: Path, database_url: str) -> None:
    with task_world(tmp_path, database_url) as w:
        task_id = w.publish(w.order())
        client = SmsClient(w.base, wallet=WORKER)
        nonce = client.call_json("POST", "/v1/attest/challenge", None, signed=False)["nonce"]
        keys = EnclaveKeys.generate()
        low_order = bytes(32)
        binding = EnclaveBinding(
            low_order, keys.ed25519_public, client.info()["sms_id"], task_id, "app", WORKER.address
        )
        evidence = SimAttester(w.platform, MEASUREMENT).evidence(
            binding.report_data(bytes.fromhex(nonce))
        )
        request = {
            "evidence": {"tee": "sim", "data": base64.b64encode(evidence.data).decode()},
            "nonce": nonce,
            "x25519_public": low_order.hex(),
            "ed25519_public": keys.ed25519_public.hex(),
            "service": "app",
            "worker": WORKER.address,
            "task": {"id": task_id, "lease_token": "lease-1"},
        }
        with pytest.raises(AuthError, match="cannot be sealed to"):
            client.call_json("POST", "/v1/attest", request, signed=True)
        assert w.run(task_id).config["task"]["id"] == task_id  # the lease was not used up


def test_attest_without_a_live_nonce_leaves_no_trace(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="test"))

        def audit_rows() -> int:
            with sms.engine.connect() as connection:
                return int(
                    connection.execute(select(func.count()).select_from(audit_log)).scalar_one()
                )

        before = audit_rows()
        keys = EnclaveKeys.generate()
        for _ in range(5):
            answer = httpx.post(
                w.base + "/v1/attest",
                json={
                    "evidence": {"tee": "sim", "data": ""},
                    "nonce": "00" * 32,
                    "x25519_public": keys.x25519_public.hex(),
                    "ed25519_public": keys.ed25519_public.hex(),
                    "service": "app",
                    "worker": OWNER.address,
                    **w.target(),
                },
            )
            assert answer.status_code == 403 and "nonce unknown" in answer.text
        assert audit_rows() == before
        sms.engine.dispose()


def test_outstanding_challenges_are_capped(tmp_path: Path, database_url: str) -> None:
    sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="t"))
    store = DatabaseNonceStore(sms.engine, limit=3)
    for _ in range(3):
        store.issue(1000)
    with pytest.raises(AttestationError, match="too many outstanding"):
        store.issue(1000)
    store.issue(1000 + 61)  # the old ones expired and were swept
    sms.engine.dispose()


class _RotatingVerifier:
    """A sim verifier that, while it appraises, lets the owner rotate a secret: the
    window between the plan's reads and the grant's write."""

    tee = "sim"

    def __init__(self, inner: SimVerifier, during: Any) -> None:
        self.inner, self.during = inner, during

    def appraise(self, evidence: Evidence, now: int) -> Appraisal:
        self.during()
        return self.inner.appraise(evidence, now)


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        ("rotate", "secret session/cubic@.* changed while attesting"),
        ("push", "secret volume/cubic/input changed while attesting"),
        ("update", "version [0-9a-f]{64} is no longer current \\(the session was updated\\)"),
    ],
)
def test_nothing_superseded_is_released(
    tmp_path: Path, database_url: str, write: str, reason: str
) -> None:
    """A secret rotated, or the session updated, between the plan's reads and the grant:
    refused (checked in the grant's transaction), and nothing released."""
    sms = Sms(
        SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="t", allow_sim=True)
    )
    from confide.sms.session_document import parse_session

    stored = sms.sessions.create(OWNER.address, parse_session(SESSION, {}), 1_800_000_000)
    ref = SecretRef(OWNER.address, "volume", "input", subject="cubic")
    sms.secrets.put(ref, b"\x11" * 32, update=False, now=1_800_000_000)
    platform = SigningKey.generate()
    DatabasePlatformRegistry(sms.engine).register(platform.public_bytes(), OWNER.address, 1)
    api_key = SecretRef(OWNER.address, "session", "api_key", subject=f"cubic@{stored.hash[:16]}")

    def during() -> None:
        if write == "rotate":
            sms.secrets.put(api_key, b"rotated", update=True, now=1_800_000_001)
        elif write == "push":  # a new version of the input volume, with its new key
            VolumeTags(sms).push(
                caller=OWNER.address,
                owner=OWNER.address,
                session="cubic",
                volume="input",
                key=b"\x22" * 32,
                previous=None,
                tag="ab" * 32,
                now=1_800_000_001,
            )
        else:
            text = SESSION.replace('version: "1"', f'version: "2"\npredecessor: {stored.hash}')
            sms.sessions.update(
                OWNER.address, OWNER.address, parse_session(text, {}), 1_800_000_001
            )

    verifier = _RotatingVerifier(SimVerifier(DatabasePlatformRegistry(sms.engine)), during)
    attestations = Attestations(sms, {"sim": verifier}, DatabaseNonceStore(sms.engine))
    nonce = attestations.challenge(1_800_000_000)
    keys = EnclaveKeys.generate()
    target = SessionTarget(OWNER.address, "cubic", stored.hash)
    binding = EnclaveBinding(
        keys.x25519_public,
        keys.ed25519_public,
        sms.config.sms_id,
        f"{OWNER.address}/cubic@{stored.hash}",
        "app",
        "",
    )
    request = AttestRequest(
        evidence=SimAttester(platform, APP).evidence(binding.report_data(nonce)),
        nonce=nonce,
        x25519_public=keys.x25519_public,
        ed25519_public=keys.ed25519_public,
        service="app",
        worker="",
        target=target,
    )
    with pytest.raises(AttestationRefusedError, match=reason):
        attestations.attest(request, 1_800_000_000)
    with sms.engine.connect() as connection:
        actions = [e.action for e in audit.entries(connection)]
    assert "attest.granted" not in actions and actions[-1] == "attest.refused"
    sms.engine.dispose()
