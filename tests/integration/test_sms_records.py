"""The sms relies only on owner-signed records, through HTTP (SQLite and PostgreSQL): what
owners push to it (``POST /v1/records``) and what it fetches from a hub that lies (a fake
hub on loopback serving records and tasks from dicts). A forged record is refused naming
it; a rewritten order, a swapped measurement, a replayed or withheld record, an unsigned
member cause no release; releases stop at valid_until, max_attempts and a cancel."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from confide.attestation.measurement import Measurement
from confide.attestation.sim import SimAttester
from confide.client.enclave import ReleasedConfig, attest_and_open
from confide.client.sms import SmsClient
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet
from confide.db import make_engine
from confide.db.audit import entries
from confide.db.engine import reading
from confide.db.schema import sms_records, task_cancels
from confide.errors import AuthError
from confide.records import OwnerRecord, SignedRecord
from confide.sms.hub_registry import HttpRecordSource, HubRegistry
from confide.sms.release_policy import ReleasePolicy
from confide.sms.tasks import TaskOrder
from tests.integration.fake_hub import (
    FakeHub,
    cancel_task,
    push_record,
    running_hub,
    task_document,
)
from tests.integration.sms_server import running_sms
from tests.integration.test_attest_tasks import sms_public_key

DEVELOPER, REQUESTER, DATA_OWNER, POOL_OWNER = (Wallet.generate() for _ in range(4))
WORKER, OUTSIDER = Wallet.generate(), Wallet.generate()
DEPLOYMENT = "hub-test"
MEASUREMENT = Measurement.parse("sim:" + "5a" * 32)
EVIL = Measurement.parse("sim:" + "e7" * 32)
CHECKSUM = "c5" * 32
SECRET_X1, DEV_SECRET, DATASET_KEY = "requester-x1", "developer-s3cret", b"\x00dataset-key"


def app_record(measurement: Measurement = MEASUREMENT, sequence: int = 1) -> OwnerRecord:
    return OwnerRecord.app(
        DEPLOYMENT,
        DEVELOPER.address,
        "app",
        bundle="b0" * 32,
        measurement=measurement,
        sequence=sequence,
    )


def dataset_record(checksum: str = CHECKSUM, sequence: int = 1) -> OwnerRecord:
    return OwnerRecord.dataset(
        DEPLOYMENT, DATA_OWNER.address, "data", blob="d0" * 32, checksum=checksum, sequence=sequence
    )


def pool_record(
    members: set[str] | None = None, sequence: int = 1, requesters: set[str] | None = None
) -> OwnerRecord:
    return OwnerRecord.workerpool(
        DEPLOYMENT,
        POOL_OWNER.address,
        "pool",
        members={WORKER.address} if members is None else members,
        requesters=requesters,
        sequence=sequence,
    )


def forged(record: OwnerRecord) -> SignedRecord:
    """``record`` with a signature that is not its owner's."""
    return SignedRecord(record, OUTSIDER.sign_text(record.signing_message()))


APP = app_record().address
DATASET = dataset_record().address
POOL = pool_record().address


def make_order(sms_key: bytes, result_public: bytes, **changes: Any) -> TaskOrder:
    order = TaskOrder(
        requester=REQUESTER.address,
        app=APP,
        app_measurement=MEASUREMENT,
        tee=("sim",),
        tolerate=("simulation",),
        ignore_advisories=(),
        secrets=((1, "x1"),),
        dataset=DATASET,
        result_key=hashlib.sha256(result_public).hexdigest(),
        sms_key=sms_key.hex(),
        workerpool=POOL,
        salt=os.urandom(16).hex(),
        dataset_checksum=CHECKSUM,
        args="--size 3",
        input_files=(("https://example.org/in.csv", "1f" * 32),),
        category="S",
        valid_until=int(time.time()) + 3600,
        max_attempts=3,
    )
    return dataclasses.replace(order, **changes)


@dataclass
class World:
    base: str
    hub: FakeHub
    platform: SigningKey
    sms_key: bytes
    result_public: bytes
    offset: list[float] = field(default_factory=lambda: [0.0])  # the sms's clock, moved

    def order(self, **changes: Any) -> TaskOrder:
        return make_order(self.sms_key, self.result_public, **changes)

    def publish(
        self,
        order: TaskOrder,
        *,
        lease: str = "lease-1",
        worker: str = WORKER.address,
        signer: Wallet = REQUESTER,
    ) -> str:
        return self.hub.put_task(order, signer.sign_text(order.signing_message()), lease, worker)

    def run(
        self,
        task_id: str,
        *,
        lease: str = "lease-1",
        worker: Wallet = WORKER,
        platform: SigningKey | None = None,
    ) -> ReleasedConfig:
        return attest_and_open(
            SmsClient(self.base, wallet=worker),
            SimAttester(platform or self.platform, MEASUREMENT),
            EnclaveKeys.generate(),
            sms_key=self.sms_key,
            target={"task": {"id": task_id, "lease_token": lease}},
            service="app",
            worker=worker.address,
            signed=True,
        )

    def refused(self, match: str, task_id: str, **kwargs: Any) -> None:
        with pytest.raises(AuthError, match=match):
            self.run(task_id, **kwargs)

    def problems(self, order: TaskOrder, signer: Wallet = REQUESTER) -> list[str]:
        body = {"order": order.to_json(), "signature": signer.sign_text(order.signing_message())}
        response = httpx.post(self.base + "/v1/task-orders/check", json=body)
        assert response.status_code == 200, response.text
        found: list[str] = response.json()["problems"]
        return found


@contextmanager
def world(tmp_path: Path, database_url: str, *, hub_records: bool = True) -> Iterator[World]:
    """An sms reading a fake hub that serves the genuine app, dataset and pool records
    (unless ``hub_records`` is False), with the secrets a task needs pushed."""
    with running_hub(FakeHub(deployment=DEPLOYMENT)) as hub:
        if hub_records:
            hub.put(app_record().sign(DEVELOPER))
            hub.put(dataset_record().sign(DATA_OWNER))
            hub.put(pool_record().sign(POOL_OWNER))
        engine = make_engine(database_url)
        registry = HubRegistry(engine, HttpRecordSource(hub.url), None, refresh=0.0)
        offset = [0.0]
        with running_sms(
            tmp_path / "sms",
            database_url,
            allow_sim=True,
            registry=registry,
            engine=engine,
            clock=lambda: time.time() + offset[0],
        ) as base:
            platform = SigningKey.generate()
            worker = SmsClient(base, wallet=WORKER)
            worker.register_platform(platform)
            requester = SmsClient(base, wallet=REQUESTER)
            requester.push_requester_secret("x1", SECRET_X1.encode())
            result_public = (
                X25519PrivateKey.generate()
                .public_key()
                .public_bytes(Encoding.Raw, PublicFormat.Raw)
            )
            requester.push_result_key(result_public)
            if hub_records:
                only_the_app = ReleasePolicy(apps=frozenset({MEASUREMENT}))
                SmsClient(base, wallet=DEVELOPER).push_app_secret(
                    APP, DEV_SECRET.encode(), policy=only_the_app
                )
                SmsClient(base, wallet=DATA_OWNER).push_dataset_key(
                    DATASET, DATASET_KEY, policy=ReleasePolicy(any_app=True)
                )
            yield World(base, hub, platform, sms_public_key(worker), result_public, offset)


def _kept(database_url: str) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        with reading(engine) as connection:
            rows = connection.execute(select(sms_records.c.address, sms_records.c.sequence))
            return {str(address): int(sequence) for address, sequence in rows}
    finally:
        engine.dispose()


# -- records pushed to the sms -----------------------------------------------------------


def test_owners_push_records_and_the_highest_sequence_is_kept(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url, hub_records=False) as w:
        first = push_record(w.base, app_record(sequence=5).sign(DEVELOPER), DEVELOPER)
        assert first.status_code == 200, first.text
        assert first.json() == {"address": APP, "kind": "app", "sequence": 5}
        for sequence in (5, 4):
            stale = push_record(w.base, app_record(sequence=sequence).sign(DEVELOPER), DEVELOPER)
            assert stale.status_code == 409
            assert f"sequence {sequence} is not above the kept sequence 5" in stale.text
        newer = push_record(w.base, app_record(EVIL, sequence=6).sign(DEVELOPER), DEVELOPER)
        assert newer.status_code == 200 and newer.json()["sequence"] == 6
        pool = push_record(w.base, pool_record().sign(POOL_OWNER), POOL_OWNER)
        assert pool.json() == {"address": POOL, "kind": "workerpool", "sequence": 1}
        assert _kept(database_url) == {APP: 6, POOL: 1}  # one row per address, replaced
        # The newest pushed record is what the sms relies on (the hub knows nothing).
        assert w.problems(w.order(dataset=None, dataset_checksum=None))[:1] == [
            f"the order's app measurement {MEASUREMENT.short()} is not one the app's owner "
            f"registered"
        ]
    engine = make_engine(database_url)
    with reading(engine) as connection:
        kept = [e for e in entries(connection) if e.action == "record.kept"]
    engine.dispose()
    assert [(e.subject, e.detail["sequence"]) for e in kept] == [
        (f"app {APP}", 5),
        (f"app {APP}", 6),
        (f"workerpool {POOL}", 1),
    ]


@pytest.mark.parametrize(
    ("record", "owner"),
    [
        (app_record(), DEVELOPER),
        (dataset_record(), DATA_OWNER),
        (pool_record(members={OUTSIDER.address}), POOL_OWNER),
    ],
    ids=["app", "dataset", "workerpool"],
)
def test_a_forged_record_pushed_to_the_sms_is_refused_naming_it(
    tmp_path: Path, database_url: str, record: OwnerRecord, owner: Wallet
) -> None:
    with world(tmp_path, database_url, hub_records=False) as w:
        refused = push_record(w.base, forged(record), OUTSIDER)
        assert refused.status_code == 422
        assert refused.json()["detail"] == (
            f"{record.kind} record {record.address} ({record.name!r}): not signed by its "
            f"owner {owner.address} (signed by {OUTSIDER.address})"
        )
        relayed = push_record(w.base, record.sign(owner), OUTSIDER)  # genuine, not his
        assert relayed.status_code == 403
        assert f"pushed by its owner {owner.address}, not by {OUTSIDER.address}" in relayed.text
        assert _kept(database_url) == {}


def test_malformed_and_foreign_records_are_refused(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url, hub_records=False) as w:
        signed = app_record().sign(DEVELOPER).to_json()
        signed["record"]["measurement"] = "md5:00"
        bad = push_record_json(w, signed)
        assert bad.status_code == 422 and "app record: measurement" in bad.text
        assert push_record_json(w, {"record": {}}).status_code == 422
        # The hub's deployment was pinned at first contact: another's record is refused.
        other = OwnerRecord.app(
            "elsewhere", DEVELOPER.address, "app", bundle="b0" * 32, measurement=MEASUREMENT
        )
        foreign = push_record(w.base, other.sign(DEVELOPER), DEVELOPER)
        assert foreign.status_code == 422
        assert "made for deployment 'elsewhere', not this one ('hub-test')" in foreign.text


def push_record_json(w: World, document: Any) -> httpx.Response:
    from tests.integration.fake_hub import signed_post

    return signed_post(w.base, DEVELOPER, "/v1/records", document)


# -- records and tasks from the hub ------------------------------------------------------


def test_a_task_is_released_on_records_fetched_and_verified(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order()
        assert w.problems(order) == []
        task_id = w.publish(order)
        env = w.run(task_id).config["environment"]
        assert env["IEXEC_APP_DEVELOPER_SECRET"] == DEV_SECRET
        assert env["IEXEC_REQUESTER_SECRET_1"] == SECRET_X1
        # What the hub served and verified is kept: the hub cannot take it back.
        assert _kept(database_url) == {APP: 1, DATASET: 1, POOL: 1}
        w.hub.records.clear()
        w.publish(order, lease="lease-2")
        assert w.run(task_id, lease="lease-2").config["task"]["id"] == task_id


@pytest.mark.parametrize("kind", ["app", "dataset", "workerpool"])
def test_a_forged_record_from_the_hub_is_refused_naming_it(
    tmp_path: Path, database_url: str, kind: str
) -> None:
    with world(tmp_path, database_url, hub_records=False) as w:
        genuine = {"app": app_record(), "dataset": dataset_record(), "workerpool": pool_record()}
        owners = {"app": DEVELOPER, "dataset": DATA_OWNER, "workerpool": POOL_OWNER}
        for name, record in genuine.items():
            w.hub.put(forged(record) if name == kind else record.sign(owners[name]))
        record = genuine[kind]
        named = (
            f"{kind} record {record.address} ({record.name!r}): not signed by its owner "
            f"{owners[kind].address} (signed by {OUTSIDER.address})"
        )
        assert named in w.problems(w.order())
        task_id = w.publish(w.order())
        w.refused("not signed by its owner", task_id)
        assert record.address not in _kept(database_url)


def test_a_hub_that_rewrites_a_task_order_causes_no_release(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order()
        signature = REQUESTER.sign_text(order.signing_message())
        # The hub runs the order with the requester's secrets mapped elsewhere: a new
        # order, under its own task id, that the requester never signed.
        rewritten = dataclasses.replace(order, args="--exfiltrate")
        w.hub.put_task(rewritten, signature, "lease-1", WORKER.address)
        w.refused(f"not signed by its requester {REQUESTER.address}", rewritten.task_id())
        # Or under the original task id: the id derives from the order.
        task_id = order.task_id()
        w.hub.tasks[task_id] = task_document(
            task_id, rewritten, signature, "lease-1", WORKER.address
        )
        w.refused("holds the order of another task", task_id)


def test_a_hub_that_swaps_the_app_measurement_causes_no_release(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        evil_order = w.order(app_measurement=EVIL)
        w.hub.put(forged(app_record(EVIL, sequence=2)))  # not the owner's
        assert any("not signed by its owner" in p for p in w.problems(evil_order)) is False
        registered = "is not one the app's owner registered"
        assert any(registered in p for p in w.problems(evil_order))  # the kept one stands
        # The owner moved to version 2 (pushed to the sms); the hub replays version 1.
        pushed = push_record(w.base, app_record(EVIL, sequence=2).sign(DEVELOPER), DEVELOPER)
        assert pushed.status_code == 200
        w.hub.put(app_record(MEASUREMENT, sequence=1).sign(DEVELOPER))
        old_order = w.order()
        assert any(registered in p for p in w.problems(old_order))
        w.refused(registered, w.publish(old_order))


def test_a_worker_the_hub_adds_to_a_pool_gets_nothing(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        own = SigningKey.generate()
        SmsClient(w.base, wallet=OUTSIDER).register_platform(own)
        task_id = w.publish(w.order(), worker=OUTSIDER.address)
        assert w.problems(w.order()) == []  # the genuine pool record, fetched and kept
        w.hub.put(forged(pool_record({WORKER.address, OUTSIDER.address}, sequence=2)))
        outsider = {"worker": OUTSIDER, "platform": own}
        w.refused(f"worker {OUTSIDER.address.lower()} is not a member", task_id, **outsider)
        # A membership record copied from another pool's signature does not verify either.
        unsigned = pool_record({WORKER.address, OUTSIDER.address}, sequence=3)
        w.hub.records[POOL] = {"record": unsigned.to_json(), "signature": "0x" + "11" * 65}
        w.refused("is not a member", task_id, **outsider)


def test_a_removal_withheld_by_the_hub_but_pushed_to_the_sms_holds(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order()
        task_id = w.publish(order)
        assert w.run(task_id).config["task"]["id"] == task_id
        removal = pool_record(members=set(), sequence=2).sign(POOL_OWNER)
        assert push_record(w.base, removal, POOL_OWNER).status_code == 200
        w.publish(order, lease="lease-2")  # the hub still serves sequence 1
        w.refused(f"worker {WORKER.address.lower()} is not a member", task_id, lease="lease-2")


def test_a_requester_the_pool_does_not_admit_is_named(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        w.hub.put(pool_record(sequence=2, requesters={OUTSIDER.address}).sign(POOL_OWNER))
        assert f"requester {REQUESTER.address} is not admitted to workerpool {POOL}" in (
            w.problems(w.order())
        )


def test_the_dataset_checksum_must_be_its_owners(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        other = w.order(dataset_checksum="99" * 32)
        problem = (
            f"the order's dataset checksum {'99' * 32} is not the one dataset {DATASET}'s "
            f"owner signed ({CHECKSUM})"
        )
        assert w.problems(other) == [problem]
        w.refused("dataset checksum", w.publish(other))


# -- valid_until, max_attempts, cancels --------------------------------------------------


def test_no_release_after_valid_until(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order(valid_until=int(time.time()) + 120)
        task_id = w.publish(order)
        w.offset[0] = 200  # the sms's clock is past the order's valid_until
        expired = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(order.valid_until))
        assert w.problems(order) == [f"the task order expired at {expired}"]
        w.refused(f"the task order expired at {expired}", task_id)


def test_no_more_releases_than_max_attempts(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order(max_attempts=2)
        task_id = w.publish(order)
        for lease in ("lease-1", "lease-2"):
            w.publish(order, lease=lease)
            assert w.run(task_id, lease=lease).config["task"]["id"] == task_id
        w.publish(order, lease="lease-3")  # the hub mints a third lease
        limit = f"task {task_id} was released 2 time(s): its order allows at most 2"
        w.refused(re.escape(limit), task_id, lease="lease-3")
        assert limit + " (max_attempts)" in w.problems(order)


def test_no_release_after_the_requester_cancels(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order()
        signature = REQUESTER.sign_text(order.signing_message())
        task_id = w.publish(order)
        stranger = cancel_task(w.base, order, signature, OUTSIDER)
        assert stranger.status_code == 403 and "only the order's requester" in stranger.text
        unsigned = cancel_task(
            w.base, order, OUTSIDER.sign_text(order.signing_message()), REQUESTER
        )
        assert unsigned.status_code == 400 and "not signed by its requester" in unsigned.text
        cancelled = cancel_task(w.base, order, signature, REQUESTER)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["task"] == task_id
        again = cancel_task(w.base, order, signature, REQUESTER)  # idempotent
        assert again.json() == cancelled.json()
        w.refused(f"the requester cancelled task {task_id}", task_id)
        assert f"the requester cancelled task {task_id}" in w.problems(order)


def test_a_cancel_is_kept_only_for_an_order_this_sms_could_release(
    tmp_path: Path, database_url: str
) -> None:
    """What a wallet can write by cancelling is bounded by its orders: one for another
    sms is refused, an expired one is answered without a row (nothing is released after
    valid_until anyway)."""
    with world(tmp_path, database_url) as w:
        elsewhere = dataclasses.replace(w.order(), sms_key="ab" * 32)
        answer = cancel_task(
            w.base, elsewhere, REQUESTER.sign_text(elsewhere.signing_message()), REQUESTER
        )
        assert answer.status_code == 400 and "pins another sms" in answer.text
        expired = w.order(valid_until=int(time.time()) - 10)
        answer = cancel_task(
            w.base, expired, REQUESTER.sign_text(expired.signing_message()), REQUESTER
        )
        assert answer.status_code == 200, answer.text
    engine = make_engine(database_url)
    try:
        with reading(engine) as connection:
            rows = connection.execute(select(func.count()).select_from(task_cancels)).scalar()
    finally:
        engine.dispose()
    assert rows == 0
