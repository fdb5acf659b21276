"""A hub-signed grant reaches no further than the wallet it vouches for could read: a
worker that reports someone else's blob digest as its own task's result, or an app record
naming someone else's blob, gets its requester a grant the storage refuses (a real hub
and a real storage that trusts it, on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

from confide.crypto.info_proof import jwks_key
from tests.integration.storage_server import running_storage
from tests.integration.test_hub_support import Clock, HubCaller, World, make_hub, running_hub

VIA = ["PRE_COMPUTE", "ATTESTING", "COMPUTING", "POST_COMPUTE", "UPLOADING"]


def completed_with(hub: HubCaller, world: World, now: float, digest: str) -> str:
    """A task of ``world`` queued, claimed by its worker and reported COMPLETED with
    ``digest`` as its result blob; its id."""
    order = world.order(now)
    assert hub.queue(world.requester, order).status_code == 201
    token = hub.claim(world.worker, world.pool().address).json()["lease_token"]
    done = hub.report(
        *(world.worker, order.task_id(), token, "COMPLETED"),
        via=VIA,
        result_digest=digest,
        result_blob=digest,
        result={"blob": digest},
    )
    assert done.status_code == 200, done.text
    return order.task_id()


def test_a_result_grant_reads_only_what_the_reporting_worker_uploaded(
    tmp_path: Path, database_url: str
) -> None:
    clock = Clock()
    with running_hub(make_hub(tmp_path / "hub", database_url), clock) as hub:
        info = hub.get("/v1/info").json()
        issuers = {str(info["audience"]): jwks_key(info["jwks"])}
        with running_storage(tmp_path, database_url, issuers=issuers) as store:
            victim, attacker = World("test"), World("test")
            victim.register(hub)
            attacker.register(hub)
            # the victim's worker uploads a result that is not encrypted: its digest is
            # public in the task's view
            data = os.urandom(4096)
            uploaded = store.put(victim.worker, data)
            assert uploaded.status_code == 201, uploaded.text
            digest = uploaded.json()["digest"]
            task = completed_with(hub, victim, clock(), digest)
            grants = hub.signed(victim.requester, "POST", f"/v1/tasks/{task}/grants", {})
            assert grants.status_code == 200, grants.text
            read = store.get(victim.requester, digest, grant=grants.json()["result"])
            assert (read.status_code, read.content) == (200, data)

            # the attacker runs a task of its own and reports the victim's digest
            theirs = completed_with(hub, attacker, clock(), digest)
            path = f"/v1/tasks/{theirs}/grants"
            stolen = hub.signed(attacker.requester, "POST", path, {}).json()["result"]
            refused = store.get(attacker.requester, digest, grant=stolen)
            assert refused.status_code == 403
            assert "who did not upload" in refused.json()["detail"]
            assert data not in refused.content


def test_a_bundle_grant_reads_only_what_the_app_owner_uploaded(
    tmp_path: Path, database_url: str
) -> None:
    clock = Clock()
    with running_hub(make_hub(tmp_path / "hub", database_url), clock) as hub:
        info = hub.get("/v1/info").json()
        issuers = {str(info["audience"]): jwks_key(info["jwks"])}
        with running_storage(tmp_path, database_url, issuers=issuers) as store:
            victim = World("test")
            secret_blob = os.urandom(2048)
            uploaded = store.put(victim.owner, secret_blob)  # e.g. someone's dataset
            digest = uploaded.json()["digest"]
            # an app record (signed by its own developer) naming that digest as its bundle
            attacker = World("test")
            attacker.register(hub)
            forged_app = attacker.app(bundle=digest)
            assert hub.put_record(attacker.developer, forged_app).status_code == 200
            order = attacker.order(clock(), app=forged_app.record.address)
            assert hub.queue(attacker.requester, order).status_code == 201, order
            claim = hub.claim(attacker.worker, attacker.pool().address).json()
            refused = store.get(attacker.worker, digest, grant=claim["grants"]["bundle"])
            assert refused.status_code == 403
            assert "who did not upload" in refused.json()["detail"]
