"""The hub's records through HTTP: kept when signed by their owner for this deployment
with a higher sequence, refused otherwise, naming why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.crypto.info_proof import check_info_proof
from confide.crypto.wallet import Wallet
from confide.errors import ConfideError
from confide.records import OwnerRecord, SignedRecord
from tests.integration.test_hub_support import Clock, HubCaller, World, make_hub, running_hub


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[HubCaller]:
    with running_hub(make_hub(tmp_path / "hub", database_url), Clock()) as caller:
        yield caller


def test_record_put_and_get(hub: HubCaller) -> None:
    world = World("test")
    app = world.app()
    answer = hub.put_record(world.developer, app)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"address": app.address, "kind": "app", "sequence": app.record.sequence}
    kept = hub.get(f"/v1/records/{app.address}")
    assert kept.status_code == 200
    assert SignedRecord.from_json(kept.json()).verify("test") == app.record
    view = hub.get(f"/v1/apps/{app.address}").json()
    assert view["measurement"] == str(app.record.measurement)
    assert view["owner"] == world.developer.address and view["signed"] == app.to_json()
    assert hub.get(f"/v1/datasets/{app.address}").status_code == 404
    listed = hub.get("/v1/apps", owner=world.developer.address).json()
    assert [v["address"] for v in listed] == [app.address]
    assert hub.get("/v1/apps", owner=world.owner.address).json() == []
    assert hub.get(f"/v1/records/0x{'00' * 20}").status_code == 404


def test_every_kind_is_kept_and_listed(hub: HubCaller) -> None:
    world = World("test")
    world.register(hub)
    pools = hub.get("/v1/workerpools").json()
    assert pools[0]["members"] == sorted([world.owner.address, world.worker.address])
    assert hub.get("/v1/datasets").json()[0]["checksum"] == "33" * 32


def test_forged_record_is_refused_naming_it(hub: HubCaller) -> None:
    world = World("test")
    impostor = Wallet.generate()
    record = world.app().record
    forged = SignedRecord(record, impostor.sign_text(record.signing_message()))
    answer = hub.put_record(world.developer, forged)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert record.address in detail and "not signed by its owner" in detail
    assert hub.get(f"/v1/records/{record.address}").status_code == 404


def test_record_sent_by_another_wallet_is_forbidden(hub: HubCaller) -> None:
    world = World("test")
    answer = hub.put_record(world.stranger, world.app())
    assert answer.status_code == 403
    assert world.developer.address in answer.json()["detail"]


def test_older_or_equal_sequence_is_refused(hub: HubCaller) -> None:
    world = World("test")
    newer, older = world.app(sequence=200), world.app(sequence=100)
    assert hub.put_record(world.developer, newer).status_code == 200
    for stale in (older, world.app(sequence=200)):
        answer = hub.put_record(world.developer, stale)
        assert answer.status_code == 409
        detail = answer.json()["detail"]
        assert str(stale.record.sequence) in detail and "kept sequence 200" in detail
    newest = world.app(sequence=300, measurement=world.app().record.measurement)
    assert hub.put_record(world.developer, newest).status_code == 200
    kept = SignedRecord.from_json(hub.get(f"/v1/records/{newest.address}").json())
    assert kept.record.sequence == 300


def test_record_of_another_deployment_is_refused(hub: HubCaller) -> None:
    world = World("other")
    answer = hub.put_record(world.developer, world.app())
    assert answer.status_code == 422
    assert "deployment 'other'" in answer.json()["detail"]


def test_malformed_records_are_refused(hub: HubCaller) -> None:
    world = World("test")
    good = world.app().to_json()
    bad_field = {**good, "record": {**good["record"], "colour": "red"}}
    no_owner_member = OwnerRecord.workerpool("test", world.owner.address, "p").to_json()
    no_owner_member["members"] = [world.worker.address]
    cases = [
        ({"record": good["record"]}, "signed record"),
        (bad_field, "unknown ['colour']"),
        ({**good, "signature": "0x1234"}, "signature is malformed"),
        ({"record": no_owner_member, "signature": "0x00"}, "owner is always one of its members"),
    ]
    for document, fragment in cases:
        answer = hub.signed(world.developer, "PUT", "/v1/records", document)
        assert answer.status_code == 422, (document, answer.text)
        assert fragment in answer.json()["detail"]
    not_json = hub.signed(world.developer, "PUT", "/v1/records", body=b"{nope")
    assert not_json.status_code == 400


def test_unsigned_or_replayed_writes_are_refused(hub: HubCaller) -> None:
    world = World("test")
    unsigned = hub.client.put(hub.base + "/v1/records", json=world.app().to_json())
    assert unsigned.status_code == 401
    answer = hub.put_record(world.developer, world.app(sequence=5))
    replay = hub.client.send(answer.request)
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]


def test_info_proves_the_signing_key(hub: HubCaller) -> None:
    challenge = bytes(range(32))
    info = hub.get("/v1/info", challenge=challenge.hex()).json()
    assert info["service"] == "hub" and info["deployment_id"] == "test"
    assert info["audience"] == hub.audience and info["audience"].startswith("hub/test/")
    check_info_proof(info, challenge)
    assert hub.get("/v1/info", challenge="00").status_code == 400
    assert hub.get("/health").status_code == 200 and hub.get("/ready").status_code == 200


def test_a_hub_with_another_identity_refuses_the_database(
    tmp_path: Path, database_url: str
) -> None:
    first = make_hub(tmp_path / "one", database_url, "test")
    first.engine.dispose()
    with pytest.raises(ConfideError, match="deployment id test"):
        make_hub(tmp_path / "two", database_url, "other")
    with pytest.raises(ConfideError, match="signing key"):
        make_hub(tmp_path / "three", database_url, "test")  # its own new key
    again = make_hub(tmp_path / "one", database_url, "")  # the kept id and key
    assert again.deployment_id == "test" and again.audience == first.audience
    again.engine.dispose()
