"""Task releases over real HTTP: the iExec variables reach the attested app only for the
requester's signed order, on a workerpool member holding the current lease, once per
lease; every refusal names its reason (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from confide.attestation.measurement import Measurement
from confide.attestation.sim import SimAttester
from confide.attestation.verifier import EnclaveBinding
from confide.client.enclave import ReleasedConfig, attest_and_open
from confide.client.sms import SmsClient
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet, normalise_address
from confide.db.stores import DatabaseNonceStore
from confide.errors import AuthError
from confide.sms.attest import AttestationRefusedError, Attestations, AttestRequest, TaskTarget
from confide.sms.registry import MemoryRegistry
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secrets import SecretRef
from confide.sms.service import Sms, SmsConfig
from confide.sms.tasks import TaskOrder, TaskRecord
from tests.integration.sms_server import running_sms

DEVELOPER, REQUESTER, DATA_OWNER, POOL_OWNER = (Wallet.generate() for _ in range(4))
WORKER, OUTSIDER = Wallet.generate(), Wallet.generate()
APP_ADDRESS = "0x" + "a1" * 20
DATASET = "0x" + "d5" * 20
POOL = "0x" + "9e" * 20
MEASUREMENT = Measurement.parse("sim:" + "5a" * 32)
SECRET_X1, SECRET_X2, DEV_SECRET = "requester-x1-value", "requester-x2-value", "developer-s3cret"


def sms_public_key(client: SmsClient) -> bytes:
    x = client.info()["jwks"]["keys"][0]["x"]
    return base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))


@dataclass
class TaskWorld:
    base: str
    registry: MemoryRegistry
    platform: SigningKey
    sms_key: bytes
    result_public: bytes

    def order(self, **changes: Any) -> TaskOrder:
        order = TaskOrder(
            requester=REQUESTER.address,
            app=APP_ADDRESS,
            app_measurement=MEASUREMENT,
            tee=("sim",),
            tolerate=("simulation",),
            ignore_advisories=(),
            secrets=((1, "x1"), (3, "x2")),
            dataset=DATASET,
            result_key=hashlib.sha256(self.result_public).hexdigest(),
            sms_key=self.sms_key.hex(),
            workerpool=POOL,
            salt=os.urandom(16).hex(),
            valid_until=int(time.time()) + 3600,
        )
        return dataclasses.replace(order, **changes)

    def publish(
        self,
        order: TaskOrder,
        *,
        signer: Wallet = REQUESTER,
        lease: str = "lease-1",
        worker: str = WORKER.address,
    ) -> str:
        signature = signer.sign_text(order.signing_message())
        self.registry.add_task(TaskRecord(order, signature, lease, worker))
        return order.task_id()

    def run(
        self,
        task_id: str,
        *,
        lease: str = "lease-1",
        worker: Wallet = WORKER,
        measurement: Measurement = MEASUREMENT,
        signed: bool = True,
    ) -> ReleasedConfig:
        client = SmsClient(self.base, wallet=worker)
        return attest_and_open(
            client,
            SimAttester(self.platform, measurement),
            EnclaveKeys.generate(),
            sms_key=self.sms_key,
            target={"task": {"id": task_id, "lease_token": lease}},
            service="app",
            worker=worker.address,
            signed=signed,
        )


@contextmanager
def task_world(tmp_path: Path, database_url: str) -> Iterator[TaskWorld]:
    registry = MemoryRegistry()
    registry.add_app(APP_ADDRESS, DEVELOPER.address, MEASUREMENT)
    registry.add_dataset(DATASET, DATA_OWNER.address)
    registry.add_member(POOL, WORKER.address)
    with running_sms(tmp_path / "sms", database_url, allow_sim=True, registry=registry) as base:
        platform = SigningKey.generate()
        worker = SmsClient(base, wallet=WORKER)
        worker.register_platform(platform)
        requester = SmsClient(base, wallet=REQUESTER)
        requester.push_requester_secret("x1", SECRET_X1.encode())
        requester.push_requester_secret("x2", SECRET_X2.encode())
        result_public = (
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        requester.push_result_key(result_public)
        only_the_app = ReleasePolicy(apps=frozenset({MEASUREMENT}))
        SmsClient(base, wallet=DEVELOPER).push_app_secret(
            APP_ADDRESS, DEV_SECRET.encode(), policy=only_the_app
        )
        SmsClient(base, wallet=DATA_OWNER).push_dataset_key(
            DATASET, b"\x00\xffdataset-key", policy=only_the_app
        )
        yield TaskWorld(base, registry, platform, sms_public_key(worker), result_public)


def test_a_task_gets_the_iexec_variables(tmp_path: Path, database_url: str) -> None:
    with task_world(tmp_path, database_url) as w:
        task_id = w.publish(w.order())
        released = w.run(task_id)
        env = released.config["environment"]
        assert env == {
            "IEXEC_TASK_ID": task_id,
            "IEXEC_APP_DEVELOPER_SECRET": DEV_SECRET,
            "IEXEC_APP_DEVELOPER_SECRET_1": DEV_SECRET,
            "IEXEC_REQUESTER_SECRET_1": SECRET_X1,
            "IEXEC_REQUESTER_SECRET_3": SECRET_X2,  # index 2 is unmapped: skipped
        }
        dataset = released.config["dataset"]
        assert base64.b64decode(dataset["key"]) == b"\x00\xffdataset-key"
        assert released.config["result_encryption_key"] == w.result_public.hex()
        assert released.config["app_logs"] is False  # the app record keeps its logs

        with pytest.raises(AuthError, match="already released for this lease"):
            w.run(task_id)
        w.publish(w.registry.tasks[task_id].order, lease="lease-2")  # a new claim
        assert w.run(task_id, lease="lease-2").config["environment"]["IEXEC_TASK_ID"] == task_id
        # The owner's word on logs, from its app record, sealed with the configuration.
        w.registry.add_app(APP_ADDRESS, DEVELOPER.address, MEASUREMENT, logs=True)
        w.publish(w.registry.tasks[task_id].order, lease="lease-3")
        assert w.run(task_id, lease="lease-3").config["app_logs"] is True


def test_task_refusals(tmp_path: Path, database_url: str) -> None:
    with task_world(tmp_path, database_url) as w:

        def refused(match: str, task_id: str, **kwargs: Any) -> None:
            with pytest.raises(AuthError, match=match):
                w.run(task_id, **kwargs)

        task_id = w.publish(w.order())
        refused("is not a member of workerpool", task_id, worker=OUTSIDER)
        refused("not the task's current lease", task_id, lease="lease-0")
        refused("is signed by the worker it names", task_id, signed=False)
        refused(
            "measurement sim:cdcd…dcd not allowed",
            task_id,
            measurement=Measurement.parse("sim:" + "cd" * 32),
        )
        refused("unknown task", "0x" + "00" * 32)

        forged = w.publish(w.order(), signer=OUTSIDER)
        refused("not signed by its requester", forged)
        # Who asks comes first: a wallet outside the pool learns nothing of the order.
        refused("is not a member of workerpool", forged, worker=OUTSIDER)
        other_code = w.publish(w.order(app_measurement=Measurement.parse("sim:" + "cd" * 32)))
        refused(
            "is not one the app's owner registered",
            other_code,
            measurement=Measurement.parse("sim:" + "cd" * 32),
        )
        elsewhere = w.publish(w.order(sms_key="77" * 32))
        refused("pins another sms key", elsewhere)
        missing = w.publish(w.order(secrets=((1, "x1"), (2, "nope"))))
        refused("requester secret.*'nope'.*do not exist", missing)
        rotated_key = w.publish(w.order(result_key="88" * 32))
        refused("result-encryption key is not the one the task order pins", rotated_key)
        held = w.publish(w.order(), worker=OUTSIDER.address)  # the lease is someone else's
        refused("not the task's current lease", held)


def test_release_policies_are_intersected(tmp_path: Path, database_url: str) -> None:
    with task_world(tmp_path, database_url) as w:
        requester = SmsClient(w.base, wallet=REQUESTER)
        requester.push_requester_secret(
            "hw", b"hardware-only", policy=ReleasePolicy(tee=frozenset({"sgx"}))
        )
        hardware_only = w.publish(w.order(secrets=((1, "hw"),)))
        with pytest.raises(AuthError, match="'hw': not released to the TEE this order runs on"):
            w.run(hardware_only)

        owner = SmsClient(w.base, wallet=DATA_OWNER)
        owner.push_dataset_key(
            DATASET,
            b"k2",
            update=True,
            policy=ReleasePolicy(
                apps=frozenset({MEASUREMENT}), requesters=frozenset({DEVELOPER.address})
            ),
        )
        restricted = w.publish(w.order())
        with pytest.raises(AuthError, match=f"dataset {DATASET}: not released for requester"):
            w.run(restricted)


def test_an_order_is_checked_before_the_task_is_queued(tmp_path: Path, database_url: str) -> None:
    with task_world(tmp_path, database_url) as w:

        def check(order: TaskOrder, signer: Wallet = REQUESTER) -> dict[str, Any]:
            body = {
                "order": order.to_json(),
                "signature": signer.sign_text(order.signing_message()),
            }
            response = httpx.post(w.base + "/v1/task-orders/check", json=body)
            assert response.status_code == 200
            result: dict[str, Any] = response.json()
            assert result["task_id"] == order.task_id()
            return result

        assert check(w.order()) == {"task_id": ANY, "ok": True, "problems": []}
        bad = check(w.order(secrets=((1, "x1"), (2, "nope"), (3, "gone"))), signer=OUTSIDER)
        assert bad["ok"] is False
        assert bad["problems"] == [
            f"the task order is not signed by its requester {REQUESTER.address} "
            f"(signed by {OUTSIDER.address})",
            f"requester secret(s) 'nope', 'gone' of {REQUESTER.address} do not exist",
        ]
        other = check(w.order(dataset="0x" + "ee" * 20, app="0x" + "ee" * 20))
        assert other["problems"] == [
            f"unknown app {'0x' + 'ee' * 20}",
            f"unknown dataset {'0x' + 'ee' * 20}",
        ]
        malformed = httpx.post(
            w.base + "/v1/task-orders/check", json={"order": {"requester": "x"}, "signature": "0x"}
        )
        assert malformed.status_code == 400 and "missing" in malformed.json()["detail"]


def test_the_check_names_what_each_secrets_owner_does_not_allow(
    tmp_path: Path, database_url: str
) -> None:
    """Release policies refuse at attestation; the check says so first, each by name,
    and the attestation refuses exactly what it said (a problem the check names is real)."""
    with task_world(tmp_path, database_url) as w:

        def problems(order: TaskOrder, signer: Wallet = REQUESTER) -> list[str]:
            body = {
                "order": order.to_json(),
                "signature": signer.sign_text(order.signing_message()),
            }
            result: list[str] = httpx.post(w.base + "/v1/task-orders/check", json=body).json()[
                "problems"
            ]
            return result

        requester = SmsClient(w.base, wallet=REQUESTER)
        requester.push_requester_secret(
            "on-sgx", b"v", policy=ReleasePolicy(tee=frozenset({"sgx"}))
        )
        requester.push_requester_secret(
            "no-sim", b"v", policy=ReleasePolicy(tee=frozenset({"sim"}))
        )
        sgx_only = w.order(secrets=((1, "on-sgx"),))
        assert problems(sgx_only) == [
            "requester secret 'on-sgx': not released to the TEE this order runs on"
        ]
        untolerated = w.order(secrets=((1, "no-sim"),))
        assert problems(untolerated) == [
            "requester secret 'no-sim': simulation, which this order runs, is not tolerated"
        ]
        for order, reason in (
            (sgx_only, "not released to the TEE this order runs on"),
            (untolerated, "simulation, which this order runs, is not tolerated"),
        ):
            with pytest.raises(AuthError, match=reason):
                w.run(w.publish(order))

        others_only = ReleasePolicy(
            apps=frozenset({MEASUREMENT}), requesters=frozenset({OUTSIDER.address.lower()})
        )
        SmsClient(w.base, wallet=DATA_OWNER).push_dataset_key(
            DATASET, b"k2", update=True, policy=others_only
        )
        assert problems(w.order()) == [
            f"dataset {DATASET}: not released for requester {REQUESTER.address}"
        ]
        with pytest.raises(AuthError, match="not released for requester"):
            w.run(w.publish(w.order()))
        # Only the requester learns what an owner allows: a badly signed order, nothing.
        assert problems(w.order(), signer=OUTSIDER) == [
            f"the task order is not signed by its requester {REQUESTER.address} "
            f"(signed by {OUTSIDER.address})"
        ]


def test_two_grants_of_one_lease_in_one_transaction(tmp_path: Path, database_url: str) -> None:
    """Two attestations of one lease recorded together (a group commit): the first is
    granted, the second refused as a second release, and a later one on its own is
    refused by the release the first recorded."""
    now = 1_800_000_000
    registry = MemoryRegistry()
    registry.add_app(APP_ADDRESS, DEVELOPER.address, MEASUREMENT)
    registry.add_member(POOL, WORKER.address)
    config = SmsConfig(
        home=tmp_path / "sms", db_url=database_url, deployment_id="t", allow_sim=True
    )
    sms = Sms(config, registry=registry)
    try:
        platform = SigningKey.generate()
        sms.platforms.register(platform.public_bytes(), WORKER.address, now)
        sms.secrets.put(
            SecretRef(REQUESTER.address, "requester", "x1"),
            SECRET_X1.encode(),
            update=False,
            now=now,
        )
        order = TaskOrder(
            requester=REQUESTER.address,
            app=APP_ADDRESS,
            app_measurement=MEASUREMENT,
            tee=("sim",),
            tolerate=("simulation",),
            ignore_advisories=(),
            secrets=((1, "x1"),),
            dataset=None,
            result_key=None,
            encrypt_result=False,
            sms_key=sms.tokens.public_key().hex(),
            workerpool=POOL,
            salt=os.urandom(16).hex(),
            valid_until=now + 3600,
        )
        signature = REQUESTER.sign_text(order.signing_message())
        registry.add_task(TaskRecord(order, signature, "lease-1", WORKER.address))
        attestations = Attestations(sms, sms.verifiers(), DatabaseNonceStore(sms.engine))
        worker = normalise_address(WORKER.address)

        def request(lease: str = "lease-1") -> AttestRequest:
            nonce, keys = attestations.challenge(now), EnclaveKeys.generate()
            binding = EnclaveBinding(
                keys.x25519_public,
                keys.ed25519_public,
                sms.config.sms_id,
                order.task_id(),
                "app",
                worker,
            )
            evidence = SimAttester(platform, MEASUREMENT).evidence(binding.report_data(nonce))
            return AttestRequest(
                evidence=evidence,
                nonce=nonce,
                x25519_public=keys.x25519_public,
                ed25519_public=keys.ed25519_public,
                service="app",
                worker=worker,
                target=TaskTarget(order.task_id(), lease),
            )

        pending = [attestations.prepare(request(), now, worker) for _ in range(2)]
        first, second = attestations.commit(pending)
        assert first.granted is not None, first
        assert str(second.refused) == "the task's secrets were already released for this lease"
        with pytest.raises(AttestationRefusedError, match="already released for this lease"):
            attestations.attest(request(), now, worker)

        # A new lease; the pool's owner removes the worker while its evidence is checked.
        registry.add_task(TaskRecord(order, signature, "lease-2", WORKER.address))
        late = attestations.prepare(request("lease-2"), now, worker)
        registry.remove_member(POOL, WORKER.address)
        (outcome,) = attestations.commit([late])
        assert outcome.granted is None
        assert str(outcome.refused) == (f"worker {worker} left workerpool {POOL} while attesting")
    finally:
        sms.engine.dispose()
