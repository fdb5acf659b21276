"""Claims, leases and the task lifecycle through HTTP: members only, a new fencing token
per claim, legal transitions only, expiry and deadlines with an injected clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from confide.crypto.info_proof import jwks_key
from confide.db.audit import entries, verify_chain
from confide.db.engine import make_engine
from confide.grants import check_grant
from tests.integration.test_hub_support import Clock, HubCaller, World, make_hub, running_hub

DIGEST = "aa" * 32
BLOB = "bb" * 32
CHAIN = ["PRE_COMPUTE", "ATTESTING", "COMPUTING", "POST_COMPUTE", "UPLOADING"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[HubCaller]:
    with running_hub(make_hub(tmp_path / "hub", database_url, lease_seconds=60), clock) as caller:
        yield caller


@pytest.fixture
def world(hub: HubCaller) -> World:
    world = World("test")
    world.register(hub)
    return world


def queued(hub: HubCaller, world: World, **kw: Any) -> str:
    order = world.order(hub.clock(), **kw)
    answer = hub.queue(world.requester, order)
    assert answer.status_code == 201, answer.text
    return order.task_id()


def claimed(hub: HubCaller, world: World) -> dict[str, Any]:
    answer = hub.claim(world.worker, world.pool().address)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def test_claim_leases_the_oldest_task_with_grants(hub: HubCaller, world: World) -> None:
    first = queued(hub, world, dataset=world.dataset().address, dataset_checksum="33" * 32)
    queued(hub, world)
    claim = claimed(hub, world)
    task = claim["task"]
    assert task["task"] == first and task["status"] == "CLAIMED" and task["attempts"] == 1
    assert task["deadline"] == int(hub.clock()) + 300  # XS
    assert task["lease"] == {
        "token": claim["lease_token"],
        "worker": world.worker.address,
        "expires_at": int(hub.clock()) + 60,
    }
    assert len(claim["lease_token"]) == 32
    issuers = {hub.audience: jwks_key(hub.get("/v1/info").json()["jwks"])}
    for name, digest in (("bundle", "11" * 32), ("dataset", "22" * 32)):
        grant = check_grant(
            claim["grants"][name],
            issuers=issuers,
            digest=digest,
            grantee=world.worker.address,
            now=hub.clock(),
        )
        assert grant.expires_at == int(hub.clock()) + 3600
    second = claimed(hub, world)
    assert second["grants"]["dataset"] is None and second["lease_token"] != claim["lease_token"]
    assert hub.claim(world.worker, world.pool().address).status_code == 204
    public = hub.get(f"/v1/tasks/{first}").json()
    assert public["lease"]["token"] == claim["lease_token"]  # what the sms reads


def test_claim_by_a_non_member_is_forbidden(hub: HubCaller, world: World) -> None:
    queued(hub, world)
    pool = world.pool().address
    answer = hub.claim(world.stranger, pool)
    assert answer.status_code == 403
    assert pool in answer.json()["detail"] and world.stranger.address in answer.json()["detail"]
    assert hub.claim(world.worker, "0x" + "99" * 20).status_code == 404
    # a removed member can no longer claim
    removed = world.pool(members=[])
    assert hub.put_record(world.owner, removed).status_code == 200
    assert hub.claim(world.worker, pool).status_code == 403
    assert hub.claim(world.owner, pool).status_code == 200  # the owner is always a member


def test_a_task_runs_to_completion(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    claim = claimed(hub, world)
    token = claim["lease_token"]
    for status in CHAIN:
        answer = hub.report(world.worker, task, token, status)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status
    incomplete = hub.report(world.worker, task, token, "COMPLETED")
    assert incomplete.status_code == 400 and "result_digest" in incomplete.json()["detail"]
    done = hub.report(
        world.worker, task, token, "COMPLETED", result_digest=DIGEST, result_blob=BLOB
    )
    assert done.status_code == 200, done.text
    view = hub.get(f"/v1/tasks/{task}").json()
    assert view["status"] == "COMPLETED" and view["result_digest"] == DIGEST
    assert view["result_blob"] == BLOB and view["lease"] is None


def test_report_may_pass_through_statuses(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)["lease_token"]
    done = hub.report(
        world.worker, task, token, "COMPLETED", via=CHAIN, result_digest=DIGEST, result_blob=BLOB
    )
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
    task = queued(hub, world)
    token = claimed(hub, world)["lease_token"]
    skipping = hub.report(world.worker, task, token, "COMPUTING", via=["PRE_COMPUTE"])
    assert skipping.status_code == 409
    assert "PRE_COMPUTE → COMPUTING" in skipping.json()["detail"]
    assert hub.get(f"/v1/tasks/{task}").json()["status"] == "CLAIMED"  # nothing applied


def test_illegal_transition_names_both_states(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)["lease_token"]
    for status in ("COMPUTING", "RECEIVED", "CLAIMED", "TIMEOUT"):
        answer = hub.report(world.worker, task, token, status)
        assert answer.status_code == 409, status
        assert f"CLAIMED → {status}" in answer.json()["detail"]
    assert hub.report(world.worker, task, token, "DANCING").status_code == 400
    failed = hub.report(world.worker, task, token, "FAILED", cause="PRE_COMPUTE_FAILED")
    assert failed.status_code == 200 and failed.json()["cause"] == "PRE_COMPUTE_FAILED"
    after = hub.report(world.worker, task, token, "PRE_COMPUTE")
    assert after.status_code == 409  # the lease ended with the final status


def test_failed_needs_a_worker_cause(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)["lease_token"]
    for cause in (None, "LEASE_EXPIRED_TOO_OFTEN", "BORED"):
        extra = {} if cause is None else {"cause": cause}
        assert hub.report(world.worker, task, token, "FAILED", **extra).status_code == 400
    assert hub.report(world.worker, task, token, "PRE_COMPUTE", cause="X").status_code == 400


def test_stale_fencing_token_and_other_workers(hub: HubCaller, world: World, clock: Clock) -> None:
    task = queued(hub, world)
    first = claimed(hub, world)["lease_token"]
    clock.advance(61)  # the lease expires: requeued at the next claim, and claimed again
    second = claimed(hub, world)
    assert second["task"]["task"] == task and second["task"]["attempts"] == 2
    stale = hub.report(world.worker, task, first, "PRE_COMPUTE")
    assert stale.status_code == 409 and "stale fencing token" in stale.json()["detail"]
    beat = hub.signed(world.worker, "POST", f"/v1/tasks/{task}/heartbeat", {"lease_token": first})
    assert beat.status_code == 409 and "stale fencing token" in beat.json()["detail"]
    token = second["lease_token"]
    assert hub.report(world.owner, task, token, "PRE_COMPUTE").status_code == 403
    assert hub.report(world.worker, task, token, "PRE_COMPUTE").status_code == 200


def test_heartbeat_extends_the_lease(hub: HubCaller, world: World, clock: Clock) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)["lease_token"]
    for _ in range(3):
        clock.advance(50)
        beat = hub.signed(
            world.worker, "POST", f"/v1/tasks/{task}/heartbeat", {"lease_token": token}
        )
        assert beat.status_code == 200, beat.text
        assert beat.json() == {"lease_expires_at": int(clock()) + 60}
    assert hub.claim(world.worker, world.pool().address).status_code == 204  # still leased
    assert hub.report(world.worker, task, token, "PRE_COMPUTE").status_code == 200


def test_expired_leases_requeue_then_fail(hub: HubCaller, world: World, clock: Clock) -> None:
    task = queued(hub, world, max_attempts=2)
    for attempt in (1, 2):
        claim = claimed(hub, world)
        assert claim["task"]["task"] == task and claim["task"]["attempts"] == attempt
        clock.advance(61)
    assert hub.claim(world.worker, world.pool().address).status_code == 204
    view = hub.get(f"/v1/tasks/{task}").json()
    assert view["status"] == "FAILED" and view["cause"] == "LEASE_EXPIRED_TOO_OFTEN"
    assert view["lease"] is None


def test_category_deadline_times_out(hub: HubCaller, world: World, clock: Clock) -> None:
    task = queued(hub, world, category="XS")
    token = claimed(hub, world)["lease_token"]
    for _ in range(6):  # kept alive past XS's 5 minutes
        clock.advance(55)
        hub.signed(world.worker, "POST", f"/v1/tasks/{task}/heartbeat", {"lease_token": token})
    assert hub.claim(world.worker, world.pool().address).status_code == 204  # sweeps
    view = hub.get(f"/v1/tasks/{task}").json()
    assert view["status"] == "TIMEOUT" and view["cause"] == "DEADLINE_PASSED"
    late = hub.report(world.worker, task, token, "PRE_COMPUTE")
    assert late.status_code == 409


def test_order_expired_in_the_queue_times_out(hub: HubCaller, world: World, clock: Clock) -> None:
    task = queued(hub, world, valid_until=int(clock()) + 100)
    clock.advance(101)
    assert hub.claim(world.worker, world.pool().address).status_code == 204
    view = hub.get(f"/v1/tasks/{task}").json()
    assert view["status"] == "TIMEOUT" and view["cause"] == "ORDER_EXPIRED"


def test_long_poll_returns_when_a_task_arrives(hub: HubCaller, world: World) -> None:
    pool = world.pool().address
    began = time.monotonic()
    assert hub.claim(world.worker, pool, wait=1).status_code == 204
    assert 0.9 <= time.monotonic() - began < 3
    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(hub.claim(world.worker, pool, wait=15))
    )
    began = time.monotonic()
    waiting.start()
    time.sleep(0.5)
    task = queued(hub, world)
    waiting.join(20)
    assert answers[0].status_code == 200 and answers[0].json()["task"]["task"] == task
    assert time.monotonic() - began < 3
    assert hub.claim(world.worker, pool, wait=21).status_code == 400


def test_cancel_by_the_requester_only(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    path = f"/v1/tasks/{task}/cancel"
    refused = hub.signed(world.stranger, "POST", path)
    assert refused.status_code == 403 and world.requester.address in refused.json()["detail"]
    token = claimed(hub, world)["lease_token"]
    answer = hub.signed(world.requester, "POST", path)
    assert answer.status_code == 200, answer.text
    assert (
        answer.json()["status"] == "FAILED" and answer.json()["cause"] == "CANCELLED_BY_REQUESTER"
    )
    again = hub.signed(world.requester, "POST", path)
    assert again.status_code == 409 and "FAILED → FAILED" in again.json()["detail"]
    assert hub.report(world.worker, task, token, "PRE_COMPUTE").status_code == 409
    assert hub.signed(world.requester, "POST", f"/v1/tasks/0x{'0' * 64}/cancel").status_code == 404


def test_openapi_lists_every_route(hub: HubCaller) -> None:
    document = hub.get("/openapi.json").json()
    listed = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    routed = {
        (route.path, method)
        for route in hub.app.routes
        for method in getattr(route, "methods", None) or set()
        if method != "HEAD"
    }
    assert listed == routed


def test_refused_and_replayed_writes_use_their_nonce(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    answer = hub.claim(world.worker, world.pool().address)
    assert answer.status_code == 200
    replay = hub.client.send(answer.request)
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    stale = hub.report(world.worker, task, "00" * 16, "PRE_COMPUTE")
    assert stale.status_code == 409
    again = hub.client.send(stale.request)
    assert again.status_code == 401 and "replayed" in again.json()["detail"]
    forbidden = hub.claim(world.stranger, world.pool().address)
    assert forbidden.status_code == 403
    assert hub.client.send(forbidden.request).status_code == 401


def test_concurrent_claims_refusals_and_reports(hub: HubCaller, world: World) -> None:
    """Writes that arrive together share a transaction; each keeps its own outcome."""
    tasks = {queued(hub, world) for _ in range(12)}
    answers: list[tuple[str, httpx.Response]] = []
    lock = threading.Lock()

    def claim(wallet_name: str) -> None:
        wallet = getattr(world, wallet_name)
        caller = HubCaller(hub.base, hub.audience, hub.clock)
        answer = caller.claim(wallet, world.pool().address)
        with lock:
            answers.append((wallet_name, answer))

    threads = [
        threading.Thread(target=claim, args=("worker" if i % 3 else "stranger",)) for i in range(18)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted((name, answer.status_code) for name, answer in answers)
    assert statuses == [("stranger", 403)] * 6 + [("worker", 200)] * 12
    claimed = [a.json()["task"]["task"] for name, a in answers if name == "worker"]
    assert sorted(claimed) == sorted(tasks)


def test_periodic_sweep_wakes_a_waiting_claim(tmp_path: Path, database_url: str) -> None:
    """An expired lease found by the periodic sweep (not by a claim) wakes a claim that
    waits on the pool."""
    clock = Clock()
    hub = make_hub(tmp_path / "hub", database_url, lease_seconds=60)
    with running_hub(hub, clock, sweep_interval=0.2) as caller:
        world = World("test")
        world.register(caller)
        task = queued(caller, world)
        assert claimed(caller, world)["task"]["task"] == task
        answers: list[httpx.Response] = []
        pool = world.pool().address
        waiting = threading.Thread(
            target=lambda: answers.append(caller.claim(world.worker, pool, wait=10))
        )
        waiting.start()
        time.sleep(0.3)  # the claim is waiting (its first try found nothing)
        clock.advance(61)
        began = time.monotonic()
        waiting.join(15)
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["task"]["attempts"] == 2
        assert time.monotonic() - began < 1.5


def test_audit_log_holds_each_signed_write(hub: HubCaller, world: World, database_url: str) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)["lease_token"]
    assert hub.report(world.worker, task, token, "COMPUTING").status_code == 409  # no entry
    assert hub.report(world.worker, task, token, "PRE_COMPUTE").status_code == 200
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert verify_chain(connection) == 6
            actions = [(e.action, e.subject) for e in entries(connection)]
    finally:
        engine.dispose()
    assert [a for a, _ in actions] == [
        "record.put",
        "record.put",
        "record.put",
        "task.queue",
        "task.claim",
        "task.status",
    ]
    assert actions[-1][1] == task
