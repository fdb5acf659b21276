"""Queueing task orders through HTTP: accepted once, and every refusal, problems
collected and named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confide.attestation.measurement import Measurement
from confide.sms.tasks import TaskOrder
from tests.integration.sms_server import running_sms
from tests.integration.test_hub_support import Clock, HubCaller, World, make_hub, running_hub

WEEK = 7 * 24 * 3600


class Checker:
    """An order checker standing in for the sms: the problems it is told to find."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.seen: list[tuple[dict[str, Any], str]] = []

    async def __call__(self, order: dict[str, Any], signature: str) -> list[str]:
        self.seen.append((order, signature))
        return list(self.problems)


@pytest.fixture
def checker() -> Checker:
    return Checker()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(tmp_path: Path, database_url: str, checker: Checker, clock: Clock) -> Iterator[HubCaller]:
    hub = make_hub(tmp_path / "hub", database_url, max_queued=3)
    with running_hub(hub, clock, order_checker=checker) as caller:
        yield caller


@pytest.fixture
def world(hub: HubCaller) -> World:
    world = World("test")
    world.register(hub)
    return world


def problems_of(answer: Any) -> list[str]:
    assert answer.status_code == 422, answer.text
    found: list[str] = answer.json()["problems"]
    return found


def test_order_is_queued_once(hub: HubCaller, world: World, checker: Checker) -> None:
    order = world.order(hub.clock())
    signature = order.sign(world.requester)
    answer = hub.queue(world.requester, order, signature)
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"task": order.task_id(), "status": "RECEIVED"}
    assert checker.seen == [(order.to_json(), signature)]
    view = hub.get(f"/v1/tasks/{order.task_id()}").json()
    assert view["status"] == "RECEIVED" and view["attempts"] == 0 and view["lease"] is None
    assert TaskOrder.from_json(view["order"]) == order and view["signature"] == signature
    assert view["deadline"] is None and view["max_attempts"] == 3
    again = hub.queue(world.requester, order, signature)
    assert again.status_code == 200 and again.json()["task"] == order.task_id()
    listed = hub.get("/v1/tasks", requester=world.requester.address).json()
    assert [t["task"] for t in listed] == [order.task_id()]
    assert hub.get("/v1/tasks", status="COMPLETED").json() == []
    assert hub.get("/v1/tasks", status="NOPE").status_code == 400
    assert hub.get(f"/v1/tasks/0x{'0' * 64}").status_code == 404
    assert hub.get("/v1/tasks/0x12").status_code == 400


def test_order_with_a_signature_that_does_not_match(hub: HubCaller, world: World) -> None:
    order = world.order(hub.clock())
    problems = problems_of(
        hub.queue(world.requester, order, order.sign(world.requester)[:-4] + "0000")
    )
    assert any("not signed by its requester" in p or "malformed" in p for p in problems)
    forged = problems_of(
        hub.queue(world.requester, order, world.stranger.sign_text(order.signing_message()))
    )
    assert any(f"signed by {world.stranger.address}" in p for p in forged)


def test_expired_or_too_long_valid_until(hub: HubCaller, world: World) -> None:
    now = int(hub.clock())
    expired = world.order(now, valid_until=now - 1)
    assert any("expired" in p for p in problems_of(hub.queue(world.requester, expired)))
    far = world.order(now, valid_until=now + WEEK + 60)
    assert any("7 days ahead" in p for p in problems_of(hub.queue(world.requester, far)))


def test_unknown_app_and_wrong_measurement(hub: HubCaller, world: World) -> None:
    now = hub.clock()
    unknown = world.order(now, app="0x" + "12" * 20)
    assert f"unknown app 0x{'12' * 20}" in problems_of(hub.queue(world.requester, unknown))
    other = Measurement.parse("sim:" + "ef" * 32)
    wrong = world.order(now, app_measurement=other)
    problems = problems_of(hub.queue(world.requester, wrong))
    assert any("is not the one in app" in p and str(other) in p for p in problems)


def test_requester_not_admitted_by_the_pool(hub: HubCaller, world: World) -> None:
    closed = world.pool(name="closed", requesters=[world.stranger.address])
    assert hub.put_record(world.owner, closed).status_code == 200
    order = world.order(hub.clock(), workerpool=closed.address)
    problems = problems_of(hub.queue(world.requester, order))
    assert (
        f"workerpool {closed.address} does not admit requester {world.requester.address}"
        in problems
    )
    unknown = world.order(hub.clock(), workerpool="0x" + "34" * 20)
    assert f"unknown workerpool 0x{'34' * 20}" in problems_of(hub.queue(world.requester, unknown))


def test_dataset_checksum_must_be_the_records(hub: HubCaller, world: World) -> None:
    now = hub.clock()
    dataset = world.dataset().address
    good = world.order(now, dataset=dataset, dataset_checksum="33" * 32)
    assert hub.queue(world.requester, good).status_code == 201
    wrong = world.order(now, dataset=dataset, dataset_checksum="44" * 32)
    problems = problems_of(hub.queue(world.requester, wrong))
    assert any("dataset checksum" in p and "44" * 32 in p for p in problems)
    missing = world.order(now, dataset="0x" + "56" * 20, dataset_checksum="33" * 32)
    assert f"unknown dataset 0x{'56' * 20}" in problems_of(hub.queue(world.requester, missing))
    stray = world.order(now, dataset_checksum="33" * 32)
    assert any("no dataset" in p for p in problems_of(hub.queue(world.requester, stray)))


def test_every_problem_is_collected(hub: HubCaller, world: World, checker: Checker) -> None:
    checker.problems = ["requester secret(s) 'x1' of someone do not exist"]
    now = int(hub.clock())
    order = world.order(
        now,
        app="0x" + "12" * 20,
        workerpool="0x" + "34" * 20,
        valid_until=now - 5,
        dataset="0x" + "56" * 20,
        dataset_checksum="33" * 32,
    )
    problems = problems_of(
        hub.queue(world.requester, order, world.stranger.sign_text(order.signing_message()))
    )
    assert len(problems) == 6, problems
    assert checker.problems[0] in problems


def test_sms_problems_refuse_the_order(hub: HubCaller, world: World, checker: Checker) -> None:
    checker.problems = ["the task order pins another sms key: not released here"]
    order = world.order(hub.clock())
    assert problems_of(hub.queue(world.requester, order)) == checker.problems
    assert hub.get(f"/v1/tasks/{order.task_id()}").status_code == 404


def test_per_requester_limit(hub: HubCaller, world: World) -> None:
    for _ in range(3):
        assert hub.queue(world.requester, world.order(hub.clock())).status_code == 201
    answer = hub.queue(world.requester, world.order(hub.clock()))
    assert answer.status_code == 429
    assert "--max-queued 3" in answer.json()["problems"][0]
    # another requester is not held back by this one
    other = World("test", developer=world.developer, owner=world.owner, worker=world.worker)
    assert hub.queue(other.requester, other.order(hub.clock())).status_code == 201


def test_order_sent_by_another_wallet_or_malformed(hub: HubCaller, world: World) -> None:
    order = world.order(hub.clock())
    document = {"order": order.to_json(), "signature": order.sign(world.requester)}
    assert hub.signed(world.stranger, "POST", "/v1/tasks", document).status_code == 403
    bad = {**document, "order": {**order.to_json(), "category": "XXL"}}
    problems = problems_of(hub.signed(world.requester, "POST", "/v1/tasks", bad))
    assert any("category 'XXL'" in p for p in problems)
    assert hub.signed(world.requester, "POST", "/v1/tasks", {"order": {}}).status_code == 400


def test_a_real_sms_names_a_missing_secret(tmp_path: Path, database_url: str, clock: Clock) -> None:
    """The hub asks a real sms (POST /v1/task-orders/check) from its event loop."""
    with running_sms(tmp_path / "sms", database_url, "test") as sms_url:
        hub = make_hub(tmp_path / "hub", database_url, sms_url=sms_url)
        with running_hub(hub, clock) as caller:
            world = World("test")
            world.register(caller)
            order = world.order(clock(), secrets=((1, "x1"),))
            problems = problems_of(caller.queue(world.requester, order))
            assert any("'x1'" in p and "do not exist" in p for p in problems), problems
            assert caller.get("/v1/info").json()["sms"] == sms_url
