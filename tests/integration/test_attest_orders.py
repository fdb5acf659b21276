"""Task orders are judged by one validator: for each check (signature, sms key, app,
measurement, dataset, requester secrets, result key, release policies) the order check
names the problem and a release refuses with the very same words (SQLite and
PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from confide.attestation.measurement import Measurement
from confide.client.sms import SmsClient
from confide.crypto.wallet import Wallet
from confide.errors import AuthError, SecretError
from confide.sms.release_policy import ReleasePolicy
from confide.sms.tasks import TaskOrder
from tests.integration.test_attest_tasks import (
    APP_ADDRESS,
    DATA_OWNER,
    DATASET,
    DEVELOPER,
    MEASUREMENT,
    OUTSIDER,
    REQUESTER,
    TaskWorld,
    task_world,
)

OTHER_CODE = Measurement.parse("sim:" + "cd" * 32)
UNKNOWN = "0x" + "ee" * 20
KEYLESS_DATASET = "0x" + "d6" * 20
GUARDED_DATASET = "0x" + "d7" * 20
NEWCOMER = Wallet.generate()  # a requester without a result-encryption key

# A case makes what it needs in the world and gives the order and the wallet signing it.
Case = Callable[[TaskWorld], tuple[TaskOrder, Wallet]]


def _sgx_only(w: TaskWorld) -> tuple[TaskOrder, Wallet]:
    SmsClient(w.base, wallet=REQUESTER).push_requester_secret(
        "on-sgx", b"v", policy=ReleasePolicy(tee=frozenset({"sgx"}))
    )
    return w.order(secrets=((1, "on-sgx"),)), REQUESTER


def _sim_untolerated(w: TaskWorld) -> tuple[TaskOrder, Wallet]:
    SmsClient(w.base, wallet=REQUESTER).push_requester_secret(
        "no-sim", b"v", policy=ReleasePolicy(tee=frozenset({"sim"}))
    )
    return w.order(secrets=((1, "no-sim"),)), REQUESTER


def _keyless_dataset(w: TaskWorld) -> tuple[TaskOrder, Wallet]:
    w.registry.add_dataset(KEYLESS_DATASET, DATA_OWNER.address)
    return w.order(dataset=KEYLESS_DATASET), REQUESTER


def _guarded_dataset(w: TaskWorld) -> tuple[TaskOrder, Wallet]:
    w.registry.add_dataset(GUARDED_DATASET, DATA_OWNER.address)
    policy = ReleasePolicy(apps=frozenset({MEASUREMENT}), requesters=frozenset({DEVELOPER.address}))
    SmsClient(w.base, wallet=DATA_OWNER).push_dataset_key(GUARDED_DATASET, b"k", policy=policy)
    return w.order(dataset=GUARDED_DATASET), REQUESTER


def _no_result_key(w: TaskWorld) -> tuple[TaskOrder, Wallet]:
    order = w.order(requester=NEWCOMER.address, secrets=())
    return order, NEWCOMER


CASES: dict[str, tuple[Case, str]] = {
    "signature": (
        lambda w: (w.order(), OUTSIDER),
        f"the task order is not signed by its requester {REQUESTER.address} "
        f"(signed by {OUTSIDER.address})",
    ),
    "sms key": (
        lambda w: (w.order(sms_key="77" * 32), REQUESTER),
        "the task order pins another sms key: not released here",
    ),
    "app": (lambda w: (w.order(app=UNKNOWN), REQUESTER), f"unknown app {UNKNOWN}"),
    "measurement": (
        lambda w: (w.order(app_measurement=OTHER_CODE), REQUESTER),
        f"the order's app measurement {OTHER_CODE.short()} is not one the app's owner registered",
    ),
    "app secret's measurements": (
        lambda w: (w.order(app_measurement=OTHER_CODE), REQUESTER),
        f"the app developer secret: not released to app measurement {OTHER_CODE.short()}",
    ),
    "dataset": (lambda w: (w.order(dataset=UNKNOWN), REQUESTER), f"unknown dataset {UNKNOWN}"),
    "dataset key": (_keyless_dataset, f"dataset {KEYLESS_DATASET} has no key"),
    "dataset key's requesters": (
        _guarded_dataset,
        f"dataset {GUARDED_DATASET}: not released for requester {REQUESTER.address}",
    ),
    "requester secrets": (
        lambda w: (w.order(secrets=((1, "x1"), (2, "nope"))), REQUESTER),
        f"requester secret(s) 'nope' of {REQUESTER.address} do not exist",
    ),
    "secret's TEE": (
        _sgx_only,
        "requester secret 'on-sgx': not released to the TEE this order runs on",
    ),
    "secret's tolerations": (
        _sim_untolerated,
        "requester secret 'no-sim': simulation, which this order runs, is not tolerated",
    ),
    "result key pinned": (
        lambda w: (w.order(result_key="88" * 32), REQUESTER),
        "the requester's result-encryption key is not the one the task order pins",
    ),
    "result key": (_no_result_key, f"requester {NEWCOMER.address} has no result-encryption key"),
}


def _check(w: TaskWorld, order: TaskOrder, signer: Wallet) -> list[str]:
    body = {"order": order.to_json(), "signature": signer.sign_text(order.signing_message())}
    answer = httpx.post(w.base + "/v1/task-orders/check", json=body)
    assert answer.status_code == 200, answer.text
    problems: list[str] = answer.json()["problems"]
    return problems


def _release(w: TaskWorld, order: TaskOrder, signer: Wallet) -> list[str]:
    with pytest.raises(AuthError) as refused:
        w.run(w.publish(order, signer=signer))
    message = str(refused.value)
    assert "sms refused (403): attestation refused: " in message, message
    return message.split("attestation refused: ", 1)[1].split("; ")


@pytest.mark.parametrize("case", list(CASES))
def test_the_order_check_and_the_release_refuse_with_the_same_reasons(
    tmp_path: Path, database_url: str, case: str
) -> None:
    make, problem = CASES[case]
    with task_world(tmp_path, database_url) as w:
        order, signer = make(w)
        problems = _check(w, order, signer)
        assert problem in problems
        assert _release(w, order, signer) == problems  # every one, in the same words


def test_every_problem_of_an_order_is_named_at_once(tmp_path: Path, database_url: str) -> None:
    """A release refuses with every problem the check names, not the first alone."""
    with task_world(tmp_path, database_url) as w:
        order = w.order(
            sms_key="77" * 32, dataset=UNKNOWN, secrets=((1, "nope"),), result_key="88" * 32
        )
        expected = [
            "the task order pins another sms key: not released here",
            f"unknown dataset {UNKNOWN}",
            f"requester secret(s) 'nope' of {REQUESTER.address} do not exist",
            "the requester's result-encryption key is not the one the task order pins",
        ]
        assert _check(w, order, REQUESTER) == expected
        assert _release(w, order, REQUESTER) == expected


def test_a_release_asks_who_asks_before_the_order(tmp_path: Path, database_url: str) -> None:
    """A worker outside the task's workerpool learns nothing of a broken order."""
    with task_world(tmp_path, database_url) as w:
        order = w.order(sms_key="77" * 32)
        task_id = w.publish(order, signer=OUTSIDER)
        with pytest.raises(AuthError) as refused:
            w.run(task_id, worker=OUTSIDER)
        assert str(refused.value).endswith(
            f"attestation refused: worker {OUTSIDER.address} is not a member of workerpool "
            f"{order.workerpool}"
        )


def test_the_hub_cannot_choose_who_gets_the_developer_secret(
    tmp_path: Path, database_url: str
) -> None:
    evil = Measurement.parse("sim:" + "ee" * 32)
    with task_world(tmp_path, database_url) as w:
        w.registry.add_app(APP_ADDRESS, DEVELOPER.address, MEASUREMENT, evil)  # the hub adds one
        task_id = w.publish(w.order(app_measurement=evil))
        with pytest.raises(AuthError, match="app developer secret: not released to app "):
            w.run(task_id, measurement=evil)
        with pytest.raises(SecretError, match="must name the app measurement"):  # deny by default
            SmsClient(w.base, wallet=DATA_OWNER).push_dataset_key(
                DATASET, b"k", update=True, policy=ReleasePolicy(tee=frozenset({"sim"}))
            )


def test_hostile_orders_are_400_not_500(tmp_path: Path, database_url: str) -> None:
    with task_world(tmp_path, database_url) as w:
        for index in ("²", "01", "0", "1001", "1e3"):
            order = {**w.order().to_json(), "secrets": {index: "x1"}}
            answer = httpx.post(
                w.base + "/v1/task-orders/check", json={"order": order, "signature": "0x00"}
            )
            assert answer.status_code == 400, index
            assert "is not 1 to 1000" in answer.json()["detail"]
