"""The result document, status times and the requester's grants, through HTTP (SQLite
and PostgreSQL): a final report may carry a bounded, well-formed result; each status
the task went through is in its view with its time, the hub's requeue and timeout
included; only the requester gets storage grants for the result and logs blobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confide.crypto.info_proof import jwks_key
from confide.grants import check_grant
from tests.integration.test_hub_support import Clock, HubCaller, World, make_hub, running_hub

DIGEST = "aa" * 32
BLOB = "bb" * 32
LOGS = "cc" * 32
CHAIN = ["PRE_COMPUTE", "ATTESTING", "COMPUTING", "POST_COMPUTE", "UPLOADING"]
RESULT = {
    "blob": BLOB,
    "logs_blob": LOGS,
    "statement": {"task_id": "0x…", "input_digests": ["dd" * 32], "output_tags": []},
    "signature": "ee" * 64,
    "token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    "error": None,
}


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


def claimed(hub: HubCaller, world: World) -> str:
    answer = hub.claim(world.worker, world.pool().address)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["lease_token"])


def grants(hub: HubCaller, world: World, task: str, who: Any = None) -> Any:
    return hub.signed(who or world.requester, "POST", f"/v1/tasks/{task}/grants", {})


def test_times_record_each_status_with_its_time(hub: HubCaller, world: World, clock: Clock) -> None:
    start = int(clock())
    task = queued(hub, world)
    assert hub.get(f"/v1/tasks/{task}").json()["times"] == {"RECEIVED": start}
    clock.advance(2)
    token = claimed(hub, world)
    clock.advance(3)
    answer = hub.report(world.worker, task, token, "ATTESTING", via=["PRE_COMPUTE"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["times"]["ATTESTING"] == start + 5
    clock.advance(4)
    done = hub.report(
        world.worker,
        task,
        token,
        "COMPLETED",
        via=CHAIN[2:],
        result_digest=DIGEST,
        result_blob=BLOB,
        result=RESULT,
    )
    assert done.status_code == 200, done.text
    view = hub.get(f"/v1/tasks/{task}").json()
    assert view["times"] == {
        "RECEIVED": start,
        "CLAIMED": start + 2,
        "PRE_COMPUTE": start + 5,
        "ATTESTING": start + 5,
        "COMPUTING": start + 9,
        "POST_COMPUTE": start + 9,
        "UPLOADING": start + 9,
        "COMPLETED": start + 9,
    }
    assert list(view["times"]) == ["RECEIVED", "CLAIMED", *CHAIN, "COMPLETED"]
    # the hub adds who reported (uploaded) the blobs: the requester's grants vouch for it
    kept = {**RESULT, "uploader": world.worker.address.lower()}
    assert view["result"] == kept and done.json()["result"] == kept


def test_times_of_the_hubs_own_transitions(hub: HubCaller, world: World, clock: Clock) -> None:
    start = int(clock())
    task = queued(hub, world)
    first = claimed(hub, world)
    clock.advance(61)  # the lease expires: the next claim's sweep requeues it
    second = claimed(hub, world)
    assert second != first
    times = hub.get(f"/v1/tasks/{task}").json()["times"]
    assert times == {"RECEIVED": start + 61, "CLAIMED": start + 61}  # the latest of each
    stale = hub.report(world.worker, task, first, "PRE_COMPUTE")
    assert stale.status_code == 409 and "stale fencing token" in stale.json()["detail"]
    for _ in range(6):  # past the XS deadline (5 min after the first claim)
        clock.advance(55)
        hub.signed(world.worker, "POST", f"/v1/tasks/{task}/heartbeat", {"lease_token": second})
    assert hub.claim(world.worker, world.pool().address).status_code == 204  # sweeps
    view = hub.get(f"/v1/tasks/{task}").json()
    assert view["status"] == "TIMEOUT" and view["times"]["TIMEOUT"] == int(clock())
    assert view["result"] is None
    cancelled = queued(hub, world)
    answer = hub.signed(world.requester, "POST", f"/v1/tasks/{cancelled}/cancel", {})
    assert answer.status_code == 200
    assert answer.json()["times"]["FAILED"] == int(clock())


def test_failed_report_may_carry_a_result(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)
    failure = {
        "blob": BLOB,
        "logs_blob": LOGS,
        "error": "the app exited with status 3",
        "timings": {"app": 0.25, "upload": 1},
    }
    answer = hub.report(
        world.worker, task, token, "FAILED", cause="APP_COMPUTE_FAILED", result=failure
    )
    assert answer.status_code == 200, answer.text
    view = hub.get(f"/v1/tasks/{task}").json()
    assert view["result"] == {
        "blob": BLOB,
        "logs_blob": LOGS,
        "statement": None,
        "signature": None,
        "token": None,
        "error": "the app exited with status 3",
        "timings": {"app": 0.25, "upload": 1.0},
        "uploader": world.worker.address.lower(),
    }
    assert view["result_blob"] is None  # COMPLETED only


@pytest.mark.parametrize(
    ("result", "fragment"),
    [
        ("not an object", "result is a JSON object"),
        ({"blob": BLOB, "secret": "x"}, "unknown fields ['secret']"),
        ({"blob": "AB" * 32}, "result.blob is a blob digest"),
        ({"logs_blob": 7}, "result.logs_blob is a blob digest"),
        ({"statement": ["x"]}, "result.statement is a JSON object"),
        ({"signature": "not hex"}, "result.signature is malformed"),
        ({"token": "a b"}, "result.token is malformed"),
        ({"error": "x" * 5000}, "result.error is a string of at most 4096"),
        ({"statement": {"k": "x" * 40000}}, "larger than 32768"),
        ({"timings": {"App": 1.0}}, "result.timings names"),
        ({"timings": {"app": -1}}, "result.timings.app is from 0"),
        ({"timings": {f"t_{c}": 1 for c in "abcdefghijklmnopq"}}, "at most 16 entries"),
    ],
)
def test_malformed_results_are_refused(
    hub: HubCaller, world: World, result: Any, fragment: str
) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)
    answer = hub.report(
        world.worker,
        task,
        token,
        "COMPLETED",
        via=CHAIN,
        result_digest=DIGEST,
        result_blob=BLOB,
        result=result,
    )
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["detail"]
    assert hub.get(f"/v1/tasks/{task}").json()["status"] == "CLAIMED"


def test_result_only_with_a_final_status_and_its_own_blob(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)
    early = hub.report(world.worker, task, token, "PRE_COMPUTE", result={"blob": BLOB})
    assert early.status_code == 400 and "COMPLETED or FAILED" in early.json()["detail"]
    other = hub.report(
        world.worker,
        task,
        token,
        "COMPLETED",
        via=CHAIN,
        result_digest=DIGEST,
        result_blob=BLOB,
        result={"blob": LOGS},
    )
    assert other.status_code == 400 and "result.blob" in other.json()["detail"]


def test_grants_for_the_requester_only(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    no_result = grants(hub, world, task)
    assert no_result.status_code == 409 and "no result yet" in no_result.json()["detail"]
    token = claimed(hub, world)
    done = hub.report(
        world.worker,
        task,
        token,
        "COMPLETED",
        via=CHAIN,
        result_digest=DIGEST,
        result_blob=BLOB,
        result=RESULT,
    )
    assert done.status_code == 200, done.text
    answer = grants(hub, world, task)
    assert answer.status_code == 200, answer.text
    issuers = {hub.audience: jwks_key(hub.get("/v1/info").json()["jwks"])}
    for name, digest in (("result", BLOB), ("logs", LOGS)):
        grant = check_grant(
            answer.json()[name],
            issuers=issuers,
            digest=digest,
            grantee=world.requester.address,
            now=hub.clock(),
        )
        assert grant.expires_at == int(hub.clock()) + 3600
    for other in (world.worker, world.stranger):
        refused = grants(hub, world, task, other)
        assert refused.status_code == 403
        assert other.address in refused.json()["detail"]
        assert world.requester.address in refused.json()["detail"]
    assert grants(hub, world, "0x" + "12" * 32).status_code == 404
    unsigned = hub.client.post(f"{hub.base}/v1/tasks/{task}/grants", json={})
    assert unsigned.status_code == 401


def test_grants_without_logs(hub: HubCaller, world: World) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)
    done = hub.report(
        world.worker,
        task,
        token,
        "COMPLETED",
        via=CHAIN,
        result_digest=DIGEST,
        result_blob=BLOB,
        result={"blob": BLOB},
    )
    assert done.status_code == 200, done.text
    answer = grants(hub, world, task)
    assert answer.status_code == 200
    assert answer.json()["logs"] is None and answer.json()["result"]


def test_a_lease_given_back_is_queued_again_at_once(
    hub: HubCaller, world: World, clock: Clock
) -> None:
    task = queued(hub, world)
    token = claimed(hub, world)
    path = f"/v1/tasks/{task}/release"
    assert hub.signed(world.stranger, "POST", path, {"lease_token": token}).status_code == 403
    clock.advance(2)
    answer = hub.signed(world.worker, "POST", path, {"lease_token": token})
    assert answer.status_code == 200, answer.text
    view = answer.json()
    assert view["status"] == "RECEIVED" and view["lease"] is None and view["attempts"] == 1
    assert view["times"]["RECEIVED"] == int(clock())
    again = hub.signed(world.worker, "POST", path, {"lease_token": token})
    assert again.status_code == 409 and "stale fencing token" in again.json()["detail"]
    assert hub.report(world.worker, task, token, "PRE_COMPUTE").status_code == 409
    second = hub.claim(world.worker, world.pool().address).json()
    assert second["task"]["task"] == task and second["task"]["attempts"] == 2
    last = queued(hub, world, max_attempts=1)
    token = claimed(hub, world)
    given = hub.signed(world.worker, "POST", f"/v1/tasks/{last}/release", {"lease_token": token})
    assert given.json()["status"] == "FAILED"
    assert given.json()["cause"] == "LEASE_EXPIRED_TOO_OFTEN"
