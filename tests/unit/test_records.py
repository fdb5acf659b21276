"""confide.records: owner-signed app, dataset and workerpool records.

Known answers (an address and an EIP-191 signature, the latter cross-checked with
eth-account, an independent implementation), tampering (every field changed makes
verify fail), another deployment, a signer who is not the owner, malformed inputs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from confide.attestation.measurement import Measurement
from confide.crypto.wallet import Wallet
from confide.records import (
    MAX_MEMBERS,
    OwnerRecord,
    RecordError,
    SignedRecord,
    next_sequence,
    record_address,
)

KEY = "11" * 32
OWNER = "0x19e7e376e7c213b7e7e7e46cc70a5dd086daff2a"
MEASUREMENT = Measurement.parse("sim:" + "cd" * 32)
KAT_ADDRESS = "0x2b52ee05ee802a253dee875b31f7e5e901f087cf"
KAT_SIGNATURE = (
    "0x6cbd077c8d603f4480bbf00c4f59849ae0055dde90e8674fdd23022ce33f6d71689029c1dbb04f52"
    "eaab84906d02b2a4159d5e186bd99b0fadb70310b6c24d201b"
)


@pytest.fixture
def owner() -> Wallet:
    return Wallet.from_private_key(KEY)


def kat_record() -> OwnerRecord:
    return OwnerRecord.app(
        "kat", OWNER, "hello", bundle="ab" * 32, measurement=MEASUREMENT, sequence=42
    )


def test_known_answer_address_and_signature(owner: Wallet) -> None:
    assert owner.address == OWNER
    record = kat_record()
    text = "\n".join(("app", "kat", OWNER, "hello")).encode()
    expected = "0x" + hashlib.sha256(b"confide-address-v1\n" + text).hexdigest()[:40]
    assert record.address == expected == KAT_ADDRESS
    assert record_address("app", "kat", OWNER.upper().replace("0X", "0x"), "hello") == KAT_ADDRESS
    signed = record.sign(owner)
    assert signed.signature == KAT_SIGNATURE
    message = encode_defunct(text=record.signing_message())
    assert Account.recover_message(message, signature=KAT_SIGNATURE).lower() == OWNER
    assert Account.sign_message(message, "0x" + KEY).signature.hex().removeprefix("0x") == (
        KAT_SIGNATURE.removeprefix("0x")
    )
    assert signed.verify("kat") == record


def test_address_is_stable_across_sequences_and_kinds_differ() -> None:
    first, later = (
        kat_record(),
        OwnerRecord.app(
            "kat", OWNER, "hello", bundle="ef" * 32, measurement=MEASUREMENT, sequence=43
        ),
    )
    assert first.address == later.address
    assert record_address("dataset", "kat", OWNER, "hello") != first.address
    assert record_address("app", "other", OWNER, "hello") != first.address


def _tampered(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's JSON with each field changed in turn (still well formed)."""
    other = {
        "deployment": "kat2",
        "owner": "0x" + "12" * 20,
        "name": "hello2",
        "sequence": document["sequence"] + 1,
        "bundle": "ee" * 32,
        "measurement": "sim:" + "ce" * 32,
        "logs": not document.get("logs", False),
        "blob": "ee" * 32,
        "checksum": "ff" * 32,
        "requesters": [],
    }
    changed = []
    for key in document:
        if key == "kind":
            continue
        if key == "members":
            extra = sorted([*document["members"], "0x" + "00" * 20])
            changed.append({**document, "members": extra})
            continue
        changed.append({**document, key: other[key]})
    return changed


@pytest.mark.parametrize("kind", ["app", "dataset", "workerpool"])
def test_every_changed_field_fails_verification(owner: Wallet, kind: str) -> None:
    record = {
        "app": kat_record(),
        "dataset": OwnerRecord.dataset("kat", OWNER, "d", blob="aa" * 32, checksum="bb" * 32),
        "workerpool": OwnerRecord.workerpool(
            "kat", OWNER, "p", members=["0x" + "34" * 20], requesters=["0x" + "56" * 20]
        ),
    }[kind]
    signed = record.sign(owner)
    cases = _tampered(record.to_json())
    assert len(cases) == len(record.to_json()) - 1
    for document in cases:
        if document["owner"] != OWNER and kind == "workerpool":
            document["members"] = sorted({*document["members"], document["owner"]})
        forged = SignedRecord(OwnerRecord.from_json(document), signed.signature)
        with pytest.raises(RecordError, match="not signed by its owner"):
            forged.verify(None)


def test_another_deployment_is_refused(owner: Wallet) -> None:
    signed = kat_record().sign(owner)
    with pytest.raises(RecordError, match="made for deployment 'kat', not this one"):
        signed.verify("prod")
    assert signed.verify("kat") and signed.verify(None)


def test_a_signer_who_is_not_the_owner(owner: Wallet) -> None:
    record = kat_record()
    impostor = Wallet.generate()
    with pytest.raises(RecordError, match="signed by its owner's wallet"):
        record.sign(impostor)
    forged = SignedRecord(record, impostor.sign_text(record.signing_message()))
    with pytest.raises(RecordError) as refused:
        forged.verify("kat")
    assert KAT_ADDRESS in str(refused.value) and impostor.address in str(refused.value)


def test_workerpool_members_and_requesters() -> None:
    pool = OwnerRecord.workerpool("kat", OWNER, "p", members=["0x" + "AB" * 20])
    assert pool.members == {OWNER, "0x" + "ab" * 20} and pool.requesters is None
    admitted = OwnerRecord.workerpool("kat", OWNER, "p", requesters=["0x" + "cd" * 20])
    assert admitted.requesters == frozenset({"0x" + "cd" * 20})


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"kind": "job"}, "record kind 'job'"),
        ({"colour": "red"}, "unknown ['colour']"),
        ({"owner": "0x12"}, "owner"),
        ({"name": "has space"}, "is not 1-64"),
        ({"deployment": "a/b"}, "is not a deployment id"),
        ({"sequence": 0}, "positive integer"),
        ({"sequence": True}, "positive integer"),
        ({"sequence": 2**62}, "positive integer"),
        ({"bundle": "AB" * 32}, "64 lower-case hex"),
        ({"measurement": "md5:00"}, "measurement"),
        ({"logs": "yes"}, "logs must be true or false"),
        ({"name": 7}, "name must be a string"),
    ],
)
def test_malformed_app_records(change: dict[str, Any], fragment: str) -> None:
    document = {**kat_record().to_json(), **change}
    with pytest.raises(RecordError, match=None) as refused:
        OwnerRecord.from_json(document)
    assert fragment in str(refused.value)


def test_malformed_workerpools_and_signed_forms() -> None:
    base = OwnerRecord.workerpool("kat", OWNER, "p").to_json()
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "members": ["0x" + "12" * 20]}, "owner is always one of its members"),
        ({**base, "members": [OWNER, OWNER]}, "sorted, once each"),
        ({**base, "members": "everyone"}, "list of wallet addresses"),
        ({**base, "members": [OWNER] + [f"0x{i:040x}" for i in range(MAX_MEMBERS)]}, "at most"),
        ({**base, "requesters": ["nobody"]}, "requesters"),
    ]
    for document, fragment in cases:
        with pytest.raises(RecordError) as refused:
            OwnerRecord.from_json(document)
        assert fragment in str(refused.value), document
    bad_forms: list[Any] = [[], {"record": base}, {"record": base, "signature": 5}]
    for bad in bad_forms:
        with pytest.raises(RecordError, match="signed record"):
            SignedRecord.from_json(bad)
    with pytest.raises(RecordError, match="signature is malformed"):
        SignedRecord.from_json({"record": base, "signature": "0xzz"}).verify(None)


def test_next_sequence_only_grows() -> None:
    assert next_sequence(0, clock=1.5) == 1500
    assert next_sequence(10**15, clock=1.5) == 10**15 + 1
