"""``confide workerpool deploy|show|list|add-worker|remove-worker`` against ``confide up``:
each change is a whole member set signed by the pool's owner, with a higher sequence, at
the hub and at the sms; only the owner changes it; --requester restricts who submits."""

from __future__ import annotations

import httpx

from confide.records import SignedRecord
from tests.acceptance.test_cli_up_platform import Up, make_bundle, up  # noqa: F401 (fixture)
from tests.conftest import assert_refusal

W1, W2 = "0x" + "a1" * 20, "0x" + "b2" * 20


def test_members_come_and_go_in_signed_records_of_rising_sequence(up: Up) -> None:  # noqa: F811
    owner = up.wallet("olga")
    pool = up.ok("olga", "workerpool", "deploy", "farm")
    address = str(pool["address"])
    assert pool == {"address": address, "name": "farm", "owner": owner}
    first = up.ok("olga", "workerpool", "show", address)
    assert first["members"] == [owner] and first["requesters"] is None
    added = up.ok("olga", "workerpool", "add-worker", address, W1.upper().replace("0X", "0x"))
    assert added["members"] == sorted([owner, W1])
    up.ok("olga", "workerpool", "add-worker", "farm", W2)  # by name, too
    removed = up.ok("olga", "workerpool", "remove-worker", address, W1)
    assert removed["members"] == sorted([owner, W2])
    assert int(str(removed["sequence"])) > int(str(added["sequence"])) > int(str(first["sequence"]))
    signed = SignedRecord.from_json(httpx.get(f"{up.url}/v1/records/{address}").json())
    assert signed.verify().members == frozenset({owner, W2})
    text = up.cli("olga", "workerpool", "show", address)
    assert text.returncode == 0 and W2 in text.stdout and "verified here" in text.stdout
    listed = up.ok("olga", "workerpool", "list", "--owner", owner)["list"]
    assert isinstance(listed, list) and [p["address"] for p in listed] == [address]


def test_membership_refusals_name_what_is_wrong(up: Up) -> None:  # noqa: F811
    owner = up.wallet("pia")
    up.wallet("quinn")
    address = str(up.ok("pia", "workerpool", "deploy", "guarded")["address"])
    assert_refusal(up.cli("pia", "workerpool", "remove-worker", address, owner), "its owner")
    assert_refusal(up.cli("pia", "workerpool", "remove-worker", address, W1), "not a member")
    up.ok("pia", "workerpool", "add-worker", address, W1)
    assert_refusal(up.cli("pia", "workerpool", "add-worker", address, W1), "already a member")
    assert_refusal(up.cli("pia", "workerpool", "add-worker", address, "0x12"), "0x12")
    stranger = up.cli("quinn", "workerpool", "add-worker", address, W2)
    assert_refusal(stranger, f"signed by {owner}", "not by your wallet")
    assert_refusal(up.cli("pia", "workerpool", "deploy", "no spaces"), "'no spaces'")
    assert_refusal(up.cli("pia", "workerpool", "show", "0x" + "00" * 20), "knows no workerpool")
    assert up.ok("pia", "workerpool", "show", address)["members"] == sorted([owner, W1])


def test_a_pool_restricted_to_requesters_refuses_the_others_at_app_run(up: Up) -> None:  # noqa: F811
    admitted = up.wallet("rex")
    up.wallet("sam")
    app = str(up.ok("rex", "app", "deploy", make_bundle(up, "rex", "restricted"))["address"])
    pool = up.ok("rex", "workerpool", "deploy", "private", "--requester", admitted)
    address = str(pool["address"])
    assert up.ok("rex", "workerpool", "show", address)["requesters"] == [admitted]
    assert up.ok("rex", "app", "run", app, "--workerpool", address)["status"] == "RECEIVED"
    refused = up.cli("sam", "app", "run", app, "--workerpool", address)
    assert_refusal(refused, "hub refused (422)")
    assert "requester" in refused.stderr
