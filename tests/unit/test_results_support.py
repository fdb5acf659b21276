"""A task's result made with real crypto, as the enclave runtime makes it: an order signed by
its requester, an sms token for an enclave's keys, the stored zip, the signed statement and
the document `task show --download` keeps. Used by the results tests (unit and CLI)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from confide.attestation.evidence import Appraisal
from confide.attestation.measurement import Measurement
from confide.attestation.token import TokenIssuer
from confide.attestation.verifier import AFFIRMING, WARNING, EnclaveBinding
from confide.attestation.verifier import Verdict as AttestationVerdict
from confide.crypto.result_key import ResultKeyPair, result_key_sha256
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import Wallet
from confide.results.digest import result_digest
from confide.results.sealed import build_result
from confide.results.statement import ResultStatement, sign_statement
from confide.sms.tasks import TaskOrder

MEASUREMENT = Measurement.parse("sim:" + "5a" * 32)
SMS_ID = "sms-test-deployment"
WORKER = "0x" + "77" * 20
INPUT_DIGEST = "ab" * 32
RESULT_FILES = {
    "result.txt": b"f(3) = 56\n",
    "computed.json": b'{"deterministic-output-path": "/iexec_out/result.txt"}',
    "deep/er/data.bin": os.urandom(3000),
}
_REQUESTER = Wallet.generate()
_SMS_KEY = SigningKey.generate()


@dataclass
class World:
    """One task's result, written under ``root``."""

    root: Path
    order: TaskOrder
    signature: str
    key_path: Path  # the requester's result key (PKCS#8 PEM)
    stored: Path  # the stored zip
    statement: ResultStatement
    statement_signature: str
    token: str
    enclave: EnclaveKeys
    now: int

    @property
    def task(self) -> str:
        return self.order.task_id()

    def document(self, **result_changes: Any) -> dict[str, Any]:
        result = {
            "blob": self.statement.ciphertext_digest,
            "logs_blob": None,
            "statement": self.statement.to_json(),
            "signature": self.statement_signature,
            "token": self.token,
            "error": None,
            **result_changes,
        }
        return {
            "format": "confide-result-download-v1",
            "task": self.task,
            "status": "COMPLETED",
            "order": self.order.to_json(),
            "signature": self.signature,
            "created_at": self.now - 20,
            "times": {"RECEIVED": self.now - 20, "COMPUTING": self.now - 5, "COMPLETED": self.now},
            "result": result,
        }

    def write_document(self, directory: Path, **result_changes: Any) -> Path:
        path = directory / f"{self.task}.json"
        path.write_text(json.dumps(self.document(**result_changes)))
        return path


def make_order(
    result_public: bytes,
    *,
    encrypt: bool = True,
    sms_key: bytes | None = None,
    requester: Wallet = _REQUESTER,
) -> TaskOrder:
    return TaskOrder(
        requester=requester.address,
        app="0x" + "a1" * 20,
        app_measurement=MEASUREMENT,
        tee=("sim",),
        tolerate=("simulation",),
        ignore_advisories=(),
        secrets=((1, "x1"),),
        dataset=None,
        result_key=result_key_sha256(result_public),
        sms_key=(sms_key or _SMS_KEY.public_bytes()).hex(),
        workerpool="0x" + "9e" * 20,
        salt=os.urandom(16).hex(),
        input_files=(("https://example.org/in.txt", INPUT_DIGEST),),
        valid_until=int(time.time()) + 3600,
        encrypt_result=encrypt,
    )


def issue_token(
    task: str,
    enclave: EnclaveKeys,
    now: int,
    *,
    status: str = WARNING,
    tee: str = "sim",
    measurement: Measurement = MEASUREMENT,
    sms_key: SigningKey = _SMS_KEY,
    audience: str | None = None,
) -> str:
    appraisal = Appraisal(tee, measurement, b"", False, "Simulated" if tee == "sim" else "UpToDate")
    binding = EnclaveBinding(
        enclave.x25519_public, enclave.ed25519_public, SMS_ID, task, "app", WORKER
    )
    verdict = AttestationVerdict(True, status, appraisal, ())
    return TokenIssuer(SMS_ID, sms_key).issue(
        verdict,
        binding,
        audience=audience or f"task:{task}",
        config_hash="cc" * 32,
        now=now - 10,
        jti="jti-1",
    )


def make_world(
    root: Path,
    *,
    encrypt: bool = True,
    files: dict[str, bytes] | None = None,
    status: str = WARNING,
    tee: str = "sim",
    requester: Wallet = _REQUESTER,
) -> World:
    root.mkdir(parents=True, exist_ok=True)
    pair = ResultKeyPair.generate()
    key_path = root / "result-key"
    pair.write(key_path, overwrite=False)
    order = make_order(pair.public_bytes, encrypt=encrypt, requester=requester)
    if tee != "sim":
        order = replace(order, tee=(tee,), tolerate=())
    signature = order.sign(requester)
    task = order.task_id()
    out = root / "iexec_out"
    for name, data in (files if files is not None else RESULT_FILES).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    salt = os.urandom(32)
    digest = result_digest(out, salt)
    stored = root / "stored.zip"
    ciphertext = build_result(
        out,
        stored,
        task_id=task,
        salt=salt,
        result_public_key=pair.public_bytes if encrypt else None,
    )
    now = int(time.time())
    enclave = EnclaveKeys.generate()
    token = issue_token(task, enclave, now, status=status, tee=tee)
    statement = ResultStatement(
        task_id=task,
        order_hash=task,
        requester=order.requester,
        worker=WORKER,
        token_jti="jti-1",
        config_hash="cc" * 32,
        dataset_checksum="",
        input_digests=(INPUT_DIGEST,),
        ciphertext_digest=ciphertext,
        result_digest=digest,
        outcome="completed",
        logs_digest="",
    )
    return World(
        root,
        order,
        signature,
        key_path,
        stored,
        statement,
        sign_statement(statement, enclave),
        token,
        enclave,
        now,
    )


def resign(world: World, statement: ResultStatement, keys: EnclaveKeys | None = None) -> World:
    """The world with another statement, signed by ``keys`` (default: the world's enclave)."""
    return replace(
        world,
        statement=statement,
        statement_signature=sign_statement(statement, keys or world.enclave),
    )


__all__ = ["AFFIRMING", "WARNING", "World", "issue_token", "make_order", "make_world", "resign"]
