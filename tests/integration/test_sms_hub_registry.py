"""The sms's registry over a hub (SQLite and PostgreSQL): the hub's deployment pinned at
first contact, a hub that does not answer, records fetched at most every few seconds
and verified once, and what an sms without a hub knows."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from confide.db import make_engine
from confide.errors import ConfideError
from confide.records import OwnerRecord
from confide.sms.hub_registry import HttpRecordSource, HubRegistry
from confide.sms.registry import HubUnavailableError, RegistryError
from confide.sms.service import Sms, SmsConfig
from tests.integration.fake_hub import FakeHub, push_record, running_hub
from tests.integration.sms_server import free_port, running_sms
from tests.integration.test_sms_records import (
    APP,
    DATA_OWNER,
    DATASET,
    DEPLOYMENT,
    DEVELOPER,
    MEASUREMENT,
    REQUESTER,
    app_record,
    dataset_record,
    make_order,
    world,
)


def test_the_hubs_deployment_is_pinned_at_first_contact(tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "sms"
    with running_hub(FakeHub(deployment=DEPLOYMENT)) as hub:
        config = SmsConfig(home=home, db_url=database_url, deployment_id="s", hub_url=hub.url)
        first = Sms(config)
        assert first.hub_deployment() == DEPLOYMENT and first.info()["hub"] == hub.url
        first.engine.dispose()
        hub.deployment = "another"  # the same URL now serves another deployment
        with pytest.raises(ConfideError, match="pinned deployment 'hub-test' at its first"):
            Sms(config)
    # A hub that does not answer at start: the pinned deployment stands.
    down = f"http://127.0.0.1:{free_port()}"
    later = Sms(SmsConfig(home=home, db_url=database_url, deployment_id="s", hub_url=down))
    try:
        assert later.hub_deployment() == DEPLOYMENT
    finally:
        later.engine.dispose()


def test_a_hub_that_does_not_answer(tmp_path: Path, database_url: str) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order()
        assert w.problems(order) == []  # the records are fetched, verified and kept
        task_id = w.publish(order)
    # The same database, its hub gone: kept records still answer, tasks cannot be known.
    engine = make_engine(database_url)
    registry = HubRegistry(engine, HttpRecordSource(f"http://127.0.0.1:{free_port()}", 0.5), None)
    try:
        registry.pin()
        app = registry.app(APP)
        assert app is not None and app.measurements == {MEASUREMENT}
        with pytest.raises(HubUnavailableError, match="did not answer"):
            registry.task(task_id)
        with pytest.raises(HubUnavailableError):
            registry.app("0x" + "ee" * 20)  # nothing kept stands in
    finally:
        engine.dispose()


def test_an_order_check_is_503_when_the_hub_is_needed_and_down(
    tmp_path: Path, database_url: str
) -> None:
    engine = make_engine(database_url)
    down = HttpRecordSource(f"http://127.0.0.1:{free_port()}", 0.5)
    registry = HubRegistry(engine, down, DEPLOYMENT)
    with running_sms(tmp_path / "sms", database_url, registry=registry, engine=engine) as base:
        body = {"order": {}, "signature": "0x"}
        assert httpx.post(base + "/v1/task-orders/check", json=body).status_code == 400
        order = make_order(b"\x00" * 32, b"\x01" * 32)
        signed = {
            "order": order.to_json(),
            "signature": REQUESTER.sign_text(order.signing_message()),
        }
        answer = httpx.post(base + "/v1/task-orders/check", json=signed)
        assert answer.status_code == 503 and "did not answer" in answer.json()["detail"]


def test_records_are_fetched_at_most_every_few_seconds_and_verified_once(
    tmp_path: Path, database_url: str
) -> None:
    with running_hub(FakeHub(deployment=DEPLOYMENT)) as hub:
        hub.put(app_record().sign(DEVELOPER))
        engine = make_engine(database_url)
        Sms(SmsConfig(home=tmp_path / "s", db_url=database_url), engine=engine)  # migrated
        registry = HubRegistry(engine, HttpRecordSource(hub.url), None, refresh=60)
        try:
            for _ in range(5):
                assert registry.app(APP) is not None
            assert hub.fetched.count(f"/v1/records/{APP}") == 1
            verified = registry.keeper._verified
            assert list(verified) == [(APP, 1)]
            quick = HubRegistry(engine, HttpRecordSource(hub.url), None, refresh=0)
            started = time.perf_counter()
            for _ in range(20):
                assert quick.app(APP) is not None
            assert hub.fetched.count(f"/v1/records/{APP}") == 21
            assert time.perf_counter() - started < 10
            with pytest.raises(RegistryError, match="is a app record, not a dataset record"):
                registry.dataset(APP)
        finally:
            engine.dispose()


def test_without_a_hub_pushed_records_count_and_no_task_is_known(
    tmp_path: Path, database_url: str
) -> None:
    with running_sms(tmp_path / "sms", database_url) as base:
        record = dataset_record().sign(DATA_OWNER)
        assert push_record(base, record, DATA_OWNER).status_code == 200
        head = httpx.head(f"{base}/v1/datasets/{DATASET}/key")
        assert head.status_code == 404  # known, no key yet
        # No hub pinned: an owner's record of any deployment is verified and kept.
        other = OwnerRecord.app(
            "anywhere", DEVELOPER.address, "a", bundle="b0" * 32, measurement=MEASUREMENT
        )
        assert push_record(base, other.sign(DEVELOPER), DEVELOPER).status_code == 200
    sms = Sms(SmsConfig(home=tmp_path / "sms", db_url=database_url, deployment_id="test"))
    try:
        dataset = sms.registry.dataset(DATASET)
        assert dataset is not None and dataset.owner == DATA_OWNER.address
        assert sms.registry.task("0x" + "00" * 32) is None
        assert sms.registry.app(APP) is None
        assert sms.hub_deployment() is None
    finally:
        sms.engine.dispose()


def test_what_a_hub_serves_malformed_is_refused_naming_it(
    tmp_path: Path, database_url: str
) -> None:
    with running_hub(FakeHub(deployment=DEPLOYMENT)) as hub:
        engine = make_engine(database_url)
        Sms(SmsConfig(home=tmp_path / "s", db_url=database_url), engine=engine)  # migrated
        registry = HubRegistry(engine, HttpRecordSource(hub.url), None, refresh=0)
        try:
            hub.records[APP] = {"record": {"kind": "app"}, "signature": "0x"}
            with pytest.raises(RegistryError, match=f"the hub's record {APP} is malformed"):
                registry.app(APP)
            hub.records[APP] = dataset_record().sign(DATA_OWNER).to_json()  # another address
            with pytest.raises(RegistryError, match=f"answered record {APP} with record"):
                registry.app(APP)
            task_id = "0x" + "ab" * 32
            hub.tasks[task_id] = {"order": {"requester": "0x"}, "signature": "0x"}
            with pytest.raises(RegistryError, match=f"document of task {task_id} is malformed"):
                registry.task(task_id)
            hub.tasks[task_id] = ["not", "an", "object"]
            with pytest.raises(RegistryError, match="is not an object"):
                registry.task(task_id)
        finally:
            engine.dispose()


def test_a_task_attestation_while_the_hub_fails_is_503_and_recorded_nowhere(
    tmp_path: Path, database_url: str
) -> None:
    with world(tmp_path, database_url) as w:
        order = w.order()
        assert w.problems(order) == []  # records fetched and kept
        task_id = w.publish(order)
        w.hub.failing = True
        with pytest.raises(ConfideError, match="503"):
            w.run(task_id)
        assert w.problems(order) == []  # kept records stand in for the hub's
        w.hub.failing = False
        assert w.run(task_id).config["task"]["id"] == task_id  # nothing was used up
