"""Offline verification of a result: every check passes on an honest result, and each kind
of tampering fails the check that names it (real tokens, signatures, HPKE)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from confide.crypto.result_key import ResultKeyPair
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.results.digest import ResultError
from confide.results.logs import open_checked, signed_logs_digest
from confide.results.opening import open_result
from confide.results.sealed import load_private_key, public_of, seal_logs
from confide.results.verify import ORDER_OF_CHECKS, Verdict, verify, verify_statement
from tests.unit.test_results_support import (
    AFFIRMING,
    World,
    issue_token,
    make_world,
    resign,
)


def check(world: World, **options: object) -> Verdict:
    document = options.pop("document", None) or world.document()
    return verify(
        world.task,
        document,  # type: ignore[arg-type]
        options.pop("stored", world.stored),  # type: ignore[arg-type]
        now=options.pop("now", world.now),  # type: ignore[arg-type]
        result_private_key_path=options.pop("key", world.key_path),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def failed(verdict: Verdict) -> str | None:
    return None if verdict.failed is None else verdict.failed.name


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path / "world")


def test_an_honest_result_passes_every_check(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    open_result(world.stored, dest, task_id=world.task, result_private_key_path=world.key_path)
    verdict = check(world, allow_sim=True, extracted_dir=dest)
    assert verdict.ok, verdict.to_json()
    assert [c.name for c in verdict.checks] == list(ORDER_OF_CHECKS)
    assert all(c.status == "ok" for c in verdict.checks), verdict.to_json()
    assert verdict.simulation and verdict.tee == "sim"
    assert verdict.result_digest == world.statement.result_digest
    assert "no hardware protection" in verdict.checks[5].detail


def test_simulation_needs_allow_sim(world: World) -> None:
    verdict = check(world)
    assert failed(verdict) == "token-status"
    assert "no hardware protection" in verdict.reason()
    assert "--allow-sim" in verdict.reason()


def test_without_the_key_the_inner_checks_are_skipped(world: World) -> None:
    verdict = check(world, allow_sim=True, key=None)
    assert verdict.ok
    skipped = {c.name for c in verdict.checks if c.status == "skipped"}
    assert skipped == {"result-digest", "extracted-files"}


def test_a_flipped_byte_in_the_zip_fails(world: World) -> None:
    data = bytearray(world.stored.read_bytes())
    data[len(data) // 2] ^= 0x40
    world.stored.write_bytes(bytes(data))
    verdict = check(world, allow_sim=True)
    assert failed(verdict) == "ciphertext-digest"


def test_a_changed_statement_fails(world: World) -> None:
    document = world.document()
    document["result"]["statement"]["result_digest"] = "00" * 32
    assert failed(check(world, allow_sim=True, document=document)) == "statement-signature"


def test_another_enclaves_key_fails(world: World) -> None:
    other = resign(world, world.statement, EnclaveKeys.generate())
    assert failed(check(other, allow_sim=True)) == "statement-signature"


def test_a_statement_for_another_task_fails(world: World) -> None:
    wrong = dataclasses.replace(world.statement, task_id="0x" + "ee" * 32)
    verdict = check(resign(world, wrong), allow_sim=True)
    assert failed(verdict) == "statement-binding"
    assert "task_id" in verdict.reason()
    jti = dataclasses.replace(world.statement, token_jti="another", input_digests=())
    verdict = check(resign(world, jti), allow_sim=True)
    assert "input_digests, token_jti" in verdict.reason()


def test_the_result_of_another_task_fails(world: World, tmp_path: Path) -> None:
    other = make_world(tmp_path / "other")
    # another task's whole result presented as this one: its order is another task
    verdict = check(world, allow_sim=True, document=other.document(), stored=other.stored)
    assert failed(verdict) == "order"
    # this task's order with another task's token and statement
    swapped = world.document(
        token=other.token,
        statement=other.statement.to_json(),
        signature=other.statement_signature,
    )
    verdict = check(world, allow_sim=True, document=swapped)
    assert failed(verdict) == "token-signature" or failed(verdict) == "token-claims"


def test_a_token_for_another_task_or_measurement(world: World) -> None:
    token = issue_token("0x" + "ee" * 32, world.enclave, world.now)
    verdict = check(world, allow_sim=True, document=world.document(token=token))
    assert failed(verdict) == "token-claims"
    assert "aud" in verdict.reason() and "task" in verdict.reason()
    from confide.attestation.measurement import Measurement

    token = issue_token(
        world.task, world.enclave, world.now, measurement=Measurement.parse("sim:" + "00" * 32)
    )
    verdict = check(world, allow_sim=True, document=world.document(token=token))
    assert failed(verdict) == "measurement"


def test_a_token_from_another_sms_fails(world: World) -> None:
    token = issue_token(world.task, world.enclave, world.now, sms_key=SigningKey.generate())
    verdict = check(world, allow_sim=True, document=world.document(token=token))
    assert failed(verdict) == "token-signature"


def test_token_times(world: World) -> None:
    late = world.document()
    late["times"] = {"RECEIVED": world.now - 20000, "COMPUTING": world.now - 15000}
    late["created_at"] = world.now - 20000
    assert failed(check(world, allow_sim=True, document=late)) == "token-time"
    early = world.document()
    early["created_at"] = world.now + 4000
    assert failed(check(world, allow_sim=True, document=early)) == "token-time"
    future = check(world, allow_sim=True, now=world.now - 4000)
    assert failed(future) == "token-time"


def test_a_wrong_result_key_fails(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other-key"
    ResultKeyPair.generate().write(other, overwrite=False)
    verdict = check(world, allow_sim=True, key=other)
    assert failed(verdict) == "result-digest"
    assert "not the one the order pinned" in verdict.reason()


def test_a_changed_extracted_file_fails(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    written = open_result(
        world.stored, dest, task_id=world.task, result_private_key_path=world.key_path
    )
    names = [p.relative_to(dest).as_posix() for p in written]
    (dest / "result.txt").write_bytes(b"f(3) = 57\n")
    verdict = check(world, allow_sim=True, extracted_dir=dest)
    assert failed(verdict) == "extracted-files"
    assert "result.txt differs" in verdict.reason()
    # offline without the key: the names kept at download and the extracted salt
    verdict = check(world, allow_sim=True, extracted_dir=dest, key=None, extracted_names=names)
    assert failed(verdict) == "extracted-files"
    (dest / "result.txt").write_bytes(b"f(3) = 56\n")
    assert check(world, allow_sim=True, extracted_dir=dest, key=None, extracted_names=names).ok
    (dest / "result.txt").unlink()
    verdict = check(world, allow_sim=True, extracted_dir=dest)
    assert failed(verdict) == "extracted-files" and "missing" in verdict.reason()


def test_the_order_decides_encryption(tmp_path: Path) -> None:
    plain = make_world(tmp_path / "plain", encrypt=False)
    assert check(plain, allow_sim=True, key=None).ok
    encrypted = make_world(tmp_path / "enc")
    # an encrypted order answered with a plain zip: the digest is right, the form is not
    shutil.copy(plain.stored, encrypted.stored)
    statement = dataclasses.replace(
        encrypted.statement, ciphertext_digest=plain.statement.ciphertext_digest
    )
    verdict = check(resign(encrypted, statement), allow_sim=True)
    assert failed(verdict) == "encryption"


def test_hub_blob_and_hardware_status(world: World, tmp_path: Path) -> None:
    verdict = check(world, allow_sim=True, document=world.document(blob="11" * 32))
    assert failed(verdict) == "ciphertext-digest"
    hardware = make_world(tmp_path / "hw", tee="sgx", status=AFFIRMING)
    verdict = check(hardware)
    assert verdict.ok and not verdict.simulation, verdict.to_json()
    hardware_token = issue_token(hardware.task, hardware.enclave, hardware.now, tee="sgx")
    verdict = check(hardware, document=hardware.document(token=hardware_token))
    assert failed(verdict) == "token-status"  # a warning (say, outdated TCB) needs allow_sim


def test_a_malformed_document_names_the_check(world: World) -> None:
    document = world.document()
    document["result"] = None
    assert failed(check(world, allow_sim=True, document=document)) == "document"
    document = world.document()
    document["signature"] = "0x" + "00" * 65
    assert failed(check(world, allow_sim=True, document=document)) == "order"
    with zipfile.ZipFile(world.stored, "a") as archive:
        archive.writestr("extra", b"x")
    verdict = check(world, allow_sim=True)
    assert failed(verdict) == "ciphertext-digest"


def test_a_failed_tasks_error_result_never_passes_for_a_completed_one(world: World) -> None:
    """The statement signs the outcome: an error result (error.txt) served as a
    COMPLETED task's result fails the `outcome` check; as a FAILED task's, it verifies and
    says the task failed, with the cause the enclave signed."""
    error = resign(world, dataclasses.replace(world.statement, outcome="failed:APP_COMPUTE_FAILED"))
    verdict = check(error, allow_sim=True)
    assert failed(verdict) == "outcome", verdict.to_json()
    assert "failed task's error.txt" in verdict.reason()
    document = error.document()
    document["status"] = "FAILED"
    as_failed = check(error, allow_sim=True, document=document)
    assert as_failed.ok, as_failed.to_json()
    assert as_failed.task_failed and as_failed.outcome == "failed:APP_COMPUTE_FAILED"
    assert "APP_COMPUTE_FAILED" in next(c for c in as_failed.checks if c.name == "outcome").detail
    assert as_failed.to_json()["outcome"] == "failed:APP_COMPUTE_FAILED"
    # A completed statement for a task the hub says FAILED does not verify either.
    document = world.document()
    document["status"] = "FAILED"
    assert failed(check(world, allow_sim=True, document=document)) == "outcome"
    honest = check(world, allow_sim=True)
    assert honest.ok and not honest.task_failed and honest.outcome == "completed"


def test_the_statement_alone_verifies_up_to_its_outcome(world: World) -> None:
    verdict, statement = verify_statement(world.task, world.document(), now=world.now)
    assert statement is None  # a simulation, not allowed
    assert failed(verdict) == "token-status"
    verdict, statement = verify_statement(
        world.task, world.document(), now=world.now, allow_sim=True
    )
    assert statement == world.statement and verdict.ok
    names = list(ORDER_OF_CHECKS)
    assert [c.name for c in verdict.checks] == names[: names.index("outcome") + 1]
    forged = world.document(token="x.y.z")
    verdict, statement = verify_statement(world.task, forged, now=world.now, allow_sim=True)
    assert statement is None and failed(verdict) == "token-signature"


def _with_logs(world: World, text: bytes) -> tuple[World, bytes]:
    sealed = seal_logs(text, public_of(load_private_key(world.key_path)), world.task)
    digest = hashlib.sha256(sealed).hexdigest()
    return resign(world, dataclasses.replace(world.statement, logs_digest=digest)), sealed


def test_logs_open_only_when_the_enclave_signed_their_digest(world: World) -> None:
    signed, sealed = _with_logs(world, b"--- stdout ---\nhello\n")
    digest = signed.statement.logs_digest
    view = signed.document(logs_blob=digest)
    assert signed_logs_digest(signed.task, view, now=signed.now) == digest
    assert open_checked(sealed, digest, signed.key_path, signed.task).endswith(b"hello\n")
    # Anyone can seal a text to the requester's public key: its digest is not the signed one.
    _, forged = _with_logs(world, b"\x1b]52;c;evil\x07 phishing\n")
    with pytest.raises(ResultError, match="the enclave signed"):
        open_checked(forged, digest, signed.key_path, signed.task)
    # The hub names other logs than the enclave signed; or the enclave signed none.
    other = signed.document(logs_blob="ab" * 32)
    with pytest.raises(ResultError, match="hub names logs blob"):
        signed_logs_digest(signed.task, other, now=signed.now)
    with pytest.raises(ResultError, match="signed no logs"):
        signed_logs_digest(world.task, world.document(logs_blob=digest), now=world.now)
    with pytest.raises(ResultError, match="has no logs"):
        signed_logs_digest(world.task, world.document(), now=world.now)
    # A statement that does not verify: nothing is trusted of it.
    broken = signed.document(logs_blob=digest, signature="00" * 64)
    with pytest.raises(ResultError, match="statement-signature"):
        signed_logs_digest(signed.task, broken, now=signed.now)


def test_nothing_is_decrypted_before_the_statement_is_authentic(world: World) -> None:
    # a token that does not verify: the archive is never opened (its decryption and
    # extraction could cost a gigabyte of an attacker's bytes), only reported skipped
    document = world.document()
    document["result"]["token"] = "e30.e30.AAAA"
    verdict = check(world, allow_sim=True, document=document)
    assert failed(verdict) == "token-signature"
    statuses = {c.name: c.status for c in verdict.checks}
    assert statuses["result-digest"] == statuses["extracted-files"] == "skipped"
