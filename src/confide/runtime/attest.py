"""Attesting: fresh enclave keys, evidence for this task, the configuration opened.

The sms is reached through the relay (its TLS ends here) and the request is signed by
the worker's wallet through the relay (the sms releases a task's secrets only to the
workerpool member holding its lease). What is opened must be signed by the sms key the
requester pinned in the order (:func:`confide.client.enclave.attest_and_open`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from confide.attestation.hardware import GramineAttester
from confide.attestation.measurement import Measurement
from confide.attestation.sim import SimAttester
from confide.attestation.verifier import Attester
from confide.client.enclave import ReleasedConfig, attest_and_open
from confide.client.sms import SmsClient
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.tokens import public_jwk, verify_token_signature
from confide.errors import ConfideError
from confide.relay.client import RelayChannel, RelaySigner, RelayTransport
from confide.runtime.job import Job
from confide.runtime.stages import ATTESTATION_FAILED, TaskFailure

SERVICE = "app"  # the service a task's enclave attests as


@dataclass(frozen=True)
class Attested:
    keys: EnclaveKeys = field(repr=False)
    released: ReleasedConfig = field(repr=False)
    claims: dict[str, Any]  # the sms's token claims (public)
    result_public_key: bytes | None  # the requester's X25519 key, checked against the order


def attester_for(job: Job, measurement: Measurement) -> Attester:
    if job.tee == "sim":
        if job.sim_platform_key is None:
            raise TaskFailure(ATTESTATION_FAILED, "tee sim needs the worker's sim platform key")
        return SimAttester(job.sim_platform_key, measurement)
    if job.tee == "sgx":
        return GramineAttester()
    raise TaskFailure(
        ATTESTATION_FAILED,
        "tee tdx: task orders for TDX are refused until a measured TD image (dm-verity root, "
        "RTMR3 extended with the bundle) can be built and tested (docs/runtime.md)",
    )


def attest(job: Job, channel: RelayChannel, measurement: Measurement) -> Attested:
    """Attest for ``job``'s task; TaskFailure(ATTESTATION_FAILED) naming the reason."""
    attester = attester_for(job, measurement)
    keys = EnclaveKeys.generate()
    signer = RelaySigner(channel, address=job.worker)
    client = SmsClient(job.sms_url, wallet=signer, transport=RelayTransport(channel))
    sms_key = bytes.fromhex(job.order.sms_key)
    try:
        released = attest_and_open(
            client,
            attester,
            keys,
            sms_key=sms_key,
            target={"task": {"id": job.task, "lease_token": job.lease_token}},
            service=SERVICE,
            worker=job.worker,
            signed=True,
        )
        claims = verify_token_signature(released.token, {"keys": [public_jwk(sms_key)]})
    except ConfideError as exc:
        raise TaskFailure(ATTESTATION_FAILED, f"attestation refused: {exc}") from None
    finally:
        client.close()
    return Attested(keys, released, claims, _result_key(job, released.config))


def _result_key(job: Job, config: dict[str, Any]) -> bytes | None:
    """The requester's result key as released, when it is the one the order pins."""
    pinned = job.order.result_key
    text = config.get("result_encryption_key")
    if pinned is None or not isinstance(text, str):
        if job.order.encrypt_result:
            raise TaskFailure(ATTESTATION_FAILED, "the sms released no result-encryption key")
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32 or hashlib.sha256(key).hexdigest() != pinned:
        raise TaskFailure(
            ATTESTATION_FAILED, "the released result key is not the one the task order pins"
        )
    return key
