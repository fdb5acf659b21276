"""Attestations that race, on SQLite and PostgreSQL: one nonce is used once (one grant or
one audited refusal, never two), and two first grants agree on an output volume's key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from confide.attestation.evidence import Appraisal, Evidence
from confide.attestation.measurement import Measurement
from confide.attestation.nonces import NONCE_USED
from confide.attestation.sim import SimAttester, SimVerifier
from confide.attestation.verifier import EnclaveBinding
from confide.crypto.sealing import EnclaveKeys, sealing_info
from confide.crypto.signing import SigningKey
from confide.db import audit
from confide.db.schema import attestations, audit_log
from confide.db.stores import DatabaseNonceStore
from confide.sms.attest import (
    AttestationRefusedError,
    Attestations,
    AttestRequest,
    Grant,
    Outcome,
    PendingGrant,
    SessionTarget,
)
from confide.sms.attest.record import Recorder
from confide.sms.secrets import SecretRef
from confide.sms.service import Sms, SmsConfig
from confide.sms.session_document import parse_session
from confide.sms.sessions import StoredSession
from tests.integration.test_attest_sessions import APP, OWNER, SESSION

NOW = 1_800_000_000
EVIL = Measurement.parse("sim:" + "ee" * 32)


class _Hook:
    """A sim verifier that runs ``during`` in each appraisal: the window between the
    plan's reads and the grant's transaction."""

    tee = "sim"

    def __init__(self, inner: SimVerifier) -> None:
        self.inner = inner
        self.during: Callable[[], None] = lambda: None

    def appraise(self, evidence: Evidence, now: int) -> Appraisal:
        self.during()
        return self.inner.appraise(evidence, now)


@dataclass
class _World:
    sms: Sms
    attestations: Attestations
    hook: _Hook
    platform: SigningKey
    session: StoredSession

    def request(
        self, nonce: bytes, keys: EnclaveKeys, measurement: Measurement = APP, service: str = "app"
    ) -> AttestRequest:
        subject = f"{OWNER.address}/cubic@{self.session.hash}"
        binding = EnclaveBinding(
            keys.x25519_public, keys.ed25519_public, self.sms.config.sms_id, subject, service, ""
        )
        evidence = SimAttester(self.platform, measurement).evidence(binding.report_data(nonce))
        return AttestRequest(
            evidence=evidence,
            nonce=nonce,
            x25519_public=keys.x25519_public,
            ed25519_public=keys.ed25519_public,
            service=service,
            worker="",
            target=SessionTarget(OWNER.address, "cubic", self.session.hash),
        )

    def audited(self, action: str) -> int:
        with self.sms.engine.connect() as connection:
            query = select(func.count()).select_from(audit_log)
            return int(connection.execute(query.where(audit_log.c.action == action)).scalar_one())

    def grants(self) -> int:
        with self.sms.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(attestations)).scalar_one()
            )


@contextmanager
def _world(tmp_path: Path, database_url: str) -> Iterator[_World]:
    sms = Sms(
        SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="t", allow_sim=True)
    )
    try:
        session = sms.sessions.create(OWNER.address, parse_session(SESSION, {}), NOW)
        ref = SecretRef(OWNER.address, "volume", "input", subject="cubic")
        sms.secrets.put(ref, b"\x11" * 32, update=False, now=NOW)
        platform = SigningKey.generate()
        sms.platforms.register(platform.public_bytes(), OWNER.address, NOW)
        hook = _Hook(SimVerifier(sms.platforms))
        attestations = Attestations(sms, {"sim": hook}, DatabaseNonceStore(sms.engine))
        yield _World(sms, attestations, hook, platform, session)
    finally:
        sms.engine.dispose()


def _race(world: _World, requests: list[AttestRequest]) -> list[Grant | str]:
    """Attest ``requests`` at once: every one has checked its nonce and read its plan
    before any is verified, then all go on to their transactions together."""
    meeting = threading.Barrier(len(requests), timeout=30)

    def meet() -> None:
        meeting.wait()

    world.hook.during = meet
    outcomes: dict[int, Grant | str] = {}

    def attest(index: int) -> None:
        try:
            outcomes[index] = world.attestations.attest(requests[index], NOW)
        except AttestationRefusedError as refusal:
            outcomes[index] = str(refusal)

    threads = [threading.Thread(target=attest, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == len(requests)
    return [outcomes[i] for i in range(len(requests))]  # in the order of the requests


@pytest.mark.parametrize("copies", [2, 4])
def test_one_nonce_gets_one_grant_when_requests_race(
    tmp_path: Path, database_url: str, copies: int
) -> None:
    with _world(tmp_path, database_url) as w:
        nonce = w.attestations.challenge(NOW)
        request = w.request(nonce, EnclaveKeys.generate())
        outcomes = _race(w, [request] * copies)
        granted = [o for o in outcomes if isinstance(o, Grant)]
        assert len(granted) == 1, outcomes
        assert [o for o in outcomes if not isinstance(o, Grant)] == [NONCE_USED] * (copies - 1)
        assert (w.grants(), w.audited("attest.granted"), w.audited("attest.refused")) == (1, 1, 0)
        with pytest.raises(AttestationRefusedError, match="nonce unknown or already used"):
            w.attestations.attest(request, NOW)  # and later, a replay
        assert w.audited("attest.refused") == 0


def test_one_nonce_gets_one_audited_refusal_when_requests_race(
    tmp_path: Path, database_url: str
) -> None:
    with _world(tmp_path, database_url) as w:
        nonce = w.attestations.challenge(NOW)
        request = w.request(nonce, EnclaveKeys.generate(), measurement=EVIL)
        outcomes = _race(w, [request] * 3)
        assert outcomes.count(NONCE_USED) == 2, outcomes
        refused = [o for o in outcomes if o != NONCE_USED]
        assert len(refused) == 1 and "not allowed" in str(refused[0])
        assert (w.grants(), w.audited("attest.refused")) == (0, 1)


def test_a_grant_and_a_refusal_racing_with_one_nonce(tmp_path: Path, database_url: str) -> None:
    """Whichever is recorded first uses the nonce up; the other is a replay, unrecorded."""
    with _world(tmp_path, database_url) as w:
        nonce = w.attestations.challenge(NOW)
        keys = EnclaveKeys.generate()
        good, bad = w.request(nonce, keys), w.request(nonce, keys, measurement=EVIL)
        outcomes = _race(w, [good, bad])
        assert NONCE_USED in outcomes
        recorded = (w.grants(), w.audited("attest.granted"), w.audited("attest.refused"))
        assert recorded in ((1, 1, 0), (0, 0, 1))


def test_a_request_without_a_live_nonce_does_no_work(tmp_path: Path, database_url: str) -> None:
    """Refused at the first read: never verified (the hook would fail), nothing recorded."""
    with _world(tmp_path, database_url) as w:

        def never() -> None:
            raise AssertionError("verified without a live nonce")

        w.hook.during = never
        expired = w.attestations.challenge(NOW - 60)
        for nonce, reason in ((b"\x00" * 32, "unknown or already used"), (expired, "expired")):
            with pytest.raises(AttestationRefusedError, match=reason):
                w.attestations.attest(w.request(nonce, EnclaveKeys.generate()), NOW)
        assert w.audited("attest.refused") == 0


def test_a_refusal_before_the_nonce_is_read_audits_nothing_without_a_live_nonce(
    tmp_path: Path, database_url: str
) -> None:
    """A session's nonce is read with its volumes' tags, after its version and service
    are found. One refused before that read (another version, a service not in it) with
    a dead nonce leaves no trace and never reaches the refusal's write transaction (the
    audit log's lock). With a live one, a version that does not exist is still refused
    without a trace (its nonce stays live: nothing was verified); a service not in an
    existing version is audited, and its nonce used up."""
    with _world(tmp_path, database_url) as w:
        refusals: list[tuple[str, ...]] = []
        refuse = w.attestations.recorder.refuse

        def counted(request: AttestRequest, now: int, reasons: tuple[str, ...]) -> None:
            refusals.append(reasons)
            refuse(request, now, reasons)

        w.attestations.recorder.refuse = counted  # type: ignore[method-assign]
        keys = EnclaveKeys.generate()
        stale = dataclasses.replace(
            w.request(b"\x00" * 32, keys), target=SessionTarget(OWNER.address, "cubic", "ab" * 32)
        )
        unknown_service = w.request(b"\x00" * 32, keys, service="nope")
        for request in (stale, unknown_service):
            with pytest.raises(AttestationRefusedError, match="unknown or already used"):
                w.attestations.attest(request, NOW)
        assert w.audited("attest.refused") == 0
        assert refusals == []  # no write transaction was begun for them
        live = w.attestations.challenge(NOW)
        with pytest.raises(AttestationRefusedError, match="no current version"):
            w.attestations.attest(dataclasses.replace(stale, nonce=live), NOW)
        assert w.audited("attest.refused") == 0 and refusals == []
        with pytest.raises(AttestationRefusedError, match="service 'nope' is not in session"):
            w.attestations.attest(dataclasses.replace(unknown_service, nonce=live), NOW)
        assert w.audited("attest.refused") == 1
        with pytest.raises(AttestationRefusedError, match="unknown or already used"):
            w.attestations.attest(dataclasses.replace(unknown_service, nonce=live), NOW)
        assert w.audited("attest.refused") == 1


def _sealed_config(w: _World, grant: Grant, request: AttestRequest, keys: EnclaveKeys) -> Any:
    info = sealing_info(
        sms_id=w.sms.config.sms_id,
        subject=request.subject,
        service=request.service,
        nonce=request.nonce,
    )
    payload = json.loads(keys.open_sealed(grant.sealed, info))
    config = payload["config"]
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest() == grant.config_hash  # the token's too
    return config


def test_first_grants_that_race_share_the_output_volume_key(
    tmp_path: Path, database_url: str
) -> None:
    """Both plans read no key for the output volume; the grant recorded second finds the
    first one's key in its transaction and seals that one instead of its own."""
    with _world(tmp_path, database_url) as w:
        first_keys, second_keys = EnclaveKeys.generate(), EnclaveKeys.generate()
        first = w.request(w.attestations.challenge(NOW), first_keys)
        second = w.request(w.attestations.challenge(NOW), second_keys)
        granted: list[Grant] = []

        def first_grant_meanwhile() -> None:
            w.hook.during = lambda: None
            granted.append(w.attestations.attest(first, NOW))

        w.hook.during = first_grant_meanwhile  # runs while the second is being verified
        late = w.attestations.attest(second, NOW)
        keys = [
            {v["name"]: v["key"] for v in _sealed_config(w, g, r, k)["volumes"]}["output"]
            for g, r, k in ((granted[0], first, first_keys), (late, second, second_keys))
        ]
        assert keys[0] == keys[1]
        stored = w.sms.secrets.latest(SecretRef(OWNER.address, "volume", "output", "cubic"))
        assert stored == (1, bytes.fromhex(keys[0]))
        assert (w.grants(), w.audited("attest.granted")) == (2, 2)


def test_first_grants_at_once_all_succeed_with_one_output_volume_key(
    tmp_path: Path, database_url: str
) -> None:
    """Several enclaves attest at once before the output volume has a key: each grant
    makes one, the first recorded stores it and the others (waiting for it on
    PostgreSQL, behind it on SQLite) find it and seal that one. None is refused."""
    with _world(tmp_path, database_url) as w:
        keys = [EnclaveKeys.generate() for _ in range(4)]
        requests = [w.request(w.attestations.challenge(NOW), k) for k in keys]
        outcomes = _race(w, requests)
        output_keys = set()
        for outcome, request, enclave in zip(outcomes, requests, keys, strict=True):
            assert isinstance(outcome, Grant), outcomes
            config = _sealed_config(w, outcome, request, enclave)
            output_keys |= {v["key"] for v in config["volumes"] if v["name"] == "output"}
        assert len(output_keys) == 1
        assert (w.grants(), w.audited("attest.granted")) == (4, 4)


# -- group commit: grants recorded together, each checked on its own ---------------------


def _other_session(w: _World) -> StoredSession:
    text = SESSION.replace("name: cubic", "name: other")
    stored = w.sms.sessions.create(OWNER.address, parse_session(text, {}), NOW)
    ref = SecretRef(OWNER.address, "volume", "input", subject="other")
    w.sms.secrets.put(ref, b"\x22" * 32, update=False, now=NOW)
    return stored


def _request_for(
    w: _World,
    session: StoredSession,
    keys: EnclaveKeys,
    service: str = "app",
    nonce: bytes | None = None,
) -> AttestRequest:
    nonce = w.attestations.challenge(NOW) if nonce is None else nonce
    subject = f"{OWNER.address}/{session.name}@{session.hash}"
    binding = EnclaveBinding(
        keys.x25519_public, keys.ed25519_public, w.sms.config.sms_id, subject, service, ""
    )
    return AttestRequest(
        evidence=SimAttester(w.platform, APP).evidence(binding.report_data(nonce)),
        nonce=nonce,
        x25519_public=keys.x25519_public,
        ed25519_public=keys.ed25519_public,
        service=service,
        worker="",
        target=SessionTarget(OWNER.address, session.name, session.hash),
    )


MANY = 40  # more secrets than one statement of the plan's read takes (BATCH)
SHAPES = f"""
name: shapes
version: "1"
services:
  - name: bare
    measurements: ["{APP}"]
    command: python3 /app/bare.py
  - name: many
    measurements: ["{APP}"]
    command: python3 /app/many.py
    environment:
{"".join(f'      S{i}: "$$confide:secrets:s{i}$$"{chr(10)}' for i in range(MANY))}\
    volumes: [out]
volumes:
  - name: out
    mode: output
secrets:
{"".join(f'  - {{name: s{i}, kind: ascii, value: "v{i}"}}{chr(10)}' for i in range(MANY))}\
security:
  tolerate: [simulation]
"""


def test_services_without_secrets_and_with_more_than_a_batch_are_planned_right(
    tmp_path: Path, database_url: str
) -> None:
    """A service with no secret and no volume (its plan's read is the nonce alone) and
    one with 40 secrets and an output volume (more than one statement takes) are each
    granted what they reference; with a dead nonce each is refused unaudited."""
    with _world(tmp_path, database_url) as w:
        session = w.sms.sessions.create(OWNER.address, parse_session(SHAPES, {}), NOW)
        for service in ("bare", "many"):
            dead = _request_for(w, session, EnclaveKeys.generate(), service, b"\x01" * 32)
            with pytest.raises(AttestationRefusedError, match="unknown or already used"):
                w.attestations.attest(dead, NOW)
        assert w.audited("attest.refused") == 0
        configs = {}
        for service in ("bare", "many"):
            keys = EnclaveKeys.generate()
            request = _request_for(w, session, keys, service)
            configs[service] = _sealed_config(w, w.attestations.attest(request, NOW), request, keys)
        assert configs["bare"]["environment"] == {} and configs["bare"]["volumes"] == []
        many = configs["many"]
        assert many["environment"] == {f"S{i}": f"v{i}" for i in range(MANY)}
        assert [(v["name"], v["tag"], len(v["key"])) for v in many["volumes"]] == [
            ("out", None, 64)
        ]
        assert w.audited("attest.granted") == 2


def _outcome(outcome: Outcome) -> Grant | str:
    return outcome.granted if outcome.granted is not None else str(outcome.refused)


def test_grants_recorded_together_are_each_checked(tmp_path: Path, database_url: str) -> None:
    """One transaction records four prepared grants: a replay of the first one's nonce is
    refused unrecorded, one whose session was updated since its plan is refused and
    audited, and the two others are granted, the second with the output volume key the
    first stored in the same transaction. The audit chain holds."""
    with _world(tmp_path, database_url) as w:
        other = _other_session(w)
        keys = [EnclaveKeys.generate() for _ in range(4)]
        first = w.request(w.attestations.challenge(NOW), keys[0])
        replay = w.request(first.nonce, keys[1])  # the same nonce, prepared before its use
        stale = _request_for(w, other, keys[2])
        last = w.request(w.attestations.challenge(NOW), keys[3])
        pending = [w.attestations.prepare(r, NOW) for r in (first, replay, stale, last)]
        text = SESSION.replace("name: cubic", "name: other").replace(
            'version: "1"', f'version: "2"\npredecessor: {other.hash}'
        )
        w.sms.sessions.update(OWNER.address, OWNER.address, parse_session(text, {}), NOW)

        outcomes = [_outcome(o) for o in w.attestations.commit(pending)]

        assert isinstance(outcomes[0], Grant) and isinstance(outcomes[3], Grant), outcomes
        assert outcomes[1] == NONCE_USED
        assert "no longer current" in str(outcomes[2])
        assert (w.grants(), w.audited("attest.granted"), w.audited("attest.refused")) == (2, 2, 1)
        volume_keys = [
            {v["name"]: v["key"] for v in _sealed_config(w, g, r, k)["volumes"]}["output"]
            for g, r, k in ((outcomes[0], first, keys[0]), (outcomes[3], last, keys[3]))
        ]
        assert volume_keys[0] == volume_keys[1]
        with w.sms.engine.connect() as connection:
            report = audit.check_chain(connection)
        assert report.error is None, report.error


def test_grants_of_one_session_in_a_batch_share_its_recheck_and_each_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    """Three grants of one session version, recorded together after the session was
    updated: the batch reads the version's successor once, and each grant is refused and
    audited on its own, in a chain that holds."""
    with _world(tmp_path, database_url) as w:
        other = _other_session(w)
        pending = [
            w.attestations.prepare(_request_for(w, other, EnclaveKeys.generate()), NOW)
            for _ in range(3)
        ]
        text = SESSION.replace("name: cubic", "name: other").replace(
            'version: "1"', f'version: "2"\npredecessor: {other.hash}'
        )
        w.sms.sessions.update(OWNER.address, OWNER.address, parse_session(text, {}), NOW)
        outcomes = [_outcome(o) for o in w.attestations.commit(pending)]
        assert all("no longer current" in str(o) for o in outcomes), outcomes
        assert (w.grants(), w.audited("attest.refused")) == (0, 3)
        with w.sms.engine.connect() as connection:
            report = audit.check_chain(connection)
        assert report.error is None, report.error


def _prepared(w: _World, count: int) -> list[PendingGrant]:
    requests = [
        w.request(w.attestations.challenge(NOW), EnclaveKeys.generate()) for _ in range(count)
    ]
    return [w.attestations.prepare(r, NOW) for r in requests]


def _faults(monkeypatch: pytest.MonkeyPatch, faults: dict[PendingGrant, Exception]) -> None:
    """Recording a grant of ``faults`` raises its exception (a fault injected in the
    unit: what a database error, or a constraint a stray writer broke, would raise)."""
    record = Recorder._record

    def faulty(self: Recorder, writes: Any, grant: PendingGrant, head: Any) -> Grant:
        if grant in faults:
            raise faults[grant]
        return record(self, writes, grant, head)

    monkeypatch.setattr(Recorder, "_record", faulty)


def _disk_error() -> OperationalError:
    return OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error"))


def _unique_error() -> IntegrityError:
    return IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE"))


def test_a_failed_group_commit_records_nothing_and_can_be_retried(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails while the third of three grants is written: the transaction
    rolls back, each grant gets the error (503 over HTTP), every nonce is still live, and
    the same grants recorded again all succeed."""
    with _world(tmp_path, database_url) as w:
        pending = _prepared(w, 3)
        _faults(monkeypatch, {pending[2]: _disk_error()})
        with pytest.raises(OperationalError):
            w.attestations.commit(pending)
        assert (w.grants(), w.audited("attest.granted")) == (0, 0)
        monkeypatch.undo()
        outcomes = w.attestations.commit(pending)
        assert all(o.granted is not None for o in outcomes), outcomes
        assert (w.grants(), w.audited("attest.granted")) == (3, 3)


def test_a_grant_a_constraint_stops_does_not_stop_the_others(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a UNIQUE constraint stop a batch (a write that did not queue on the lock),
    its grants are recorded one by one: the one at fault is refused and audited, the
    others are granted."""
    with _world(tmp_path, database_url) as w:
        pending = _prepared(w, 3)
        _faults(monkeypatch, {pending[1]: _unique_error()})
        outcomes = [_outcome(o) for o in w.attestations.commit(pending)]
        assert isinstance(outcomes[0], Grant) and isinstance(outcomes[2], Grant), outcomes
        assert "attest again" in str(outcomes[1])
        assert (w.grants(), w.audited("attest.granted"), w.audited("attest.refused")) == (2, 2, 1)


def test_a_database_error_after_a_constraint_fails_only_its_own_grant(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A constraint stops the batch, so its grants are recorded one by one; the database
    then fails while the third is: the first stays granted (and is answered), the second
    is refused, and only the third gets the error, with its nonce still live."""
    with _world(tmp_path, database_url) as w:
        pending = _prepared(w, 3)
        # the third is reached only once the batch is recorded one by one
        _faults(monkeypatch, {pending[1]: _unique_error(), pending[2]: _disk_error()})
        first, second, third = w.attestations.commit(pending)
        assert first.granted is not None, first
        assert "attest again" in str(second.refused)
        assert isinstance(third.failed, OperationalError) and third.granted is None
        with pytest.raises(OperationalError):
            third.result()
        assert (w.grants(), w.audited("attest.granted"), w.audited("attest.refused")) == (1, 1, 1)
        monkeypatch.undo()
        (again,) = w.attestations.commit([pending[2]])  # its nonce was not used up
        assert again.granted is not None, again
        assert (w.grants(), w.audited("attest.granted")) == (2, 2)
