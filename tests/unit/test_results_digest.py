"""The salted result digest and the result statement encoding: known answers, recomputed
here by hand from the documented encodings, and what changes them."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from confide.crypto.sealing import EnclaveKeys
from confide.results.digest import ResultError, result_digest
from confide.results.statement import ResultStatement, sign_statement, statement_signed_by

SALT = bytes(range(32))


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_result_digest_known_answer(tmp_path: Path) -> None:
    out = write(tmp_path / "out", {"b.txt": b"56\n", "a/z.bin": b"", "a/b": b"x" * 70000})
    (tmp_path / "out" / "empty-dir").mkdir()
    expected = hashlib.sha256(lp(b"confide-result-digest-v1") + lp(SALT) + struct.pack(">Q", 3))
    for name, data in (("a/b", b"x" * 70000), ("a/z.bin", b""), ("b.txt", b"56\n")):
        expected.update(lp(name.encode()) + struct.pack(">Q", len(data)))
        expected.update(hashlib.sha256(data).digest())
    assert result_digest(out, SALT) == expected.hexdigest()


def test_known_vector(tmp_path: Path) -> None:
    out = write(tmp_path / "out", {"result.txt": b"f(3) = 56\n"})
    assert result_digest(out, SALT) == KNOWN_DIGEST


def test_what_changes_the_digest(tmp_path: Path) -> None:
    out = write(tmp_path / "out", {"result.txt": b"56\n", "other": b"1"})
    first = result_digest(out, SALT)
    assert result_digest(out, os.urandom(32)) != first  # salted: a guess needs the salt
    os.utime(out / "other", (1, 1))
    assert result_digest(out, SALT) == first  # touching changes nothing
    (out / "other").write_bytes(b"2")
    assert result_digest(out, SALT) != first
    (out / "other").write_bytes(b"1")
    (out / "other").rename(out / "renamed")
    assert result_digest(out, SALT) != first
    (out / ".confide").mkdir()
    (out / ".confide" / "salt").write_text(SALT.hex())
    (out / "renamed").rename(out / "other")
    assert result_digest(out, SALT) == first  # the salt file is not part of it


def test_links_and_bad_salts_are_refused(tmp_path: Path) -> None:
    out = write(tmp_path / "out", {"a": b"1"})
    (out / "link").symlink_to(out / "a")
    with pytest.raises(ResultError, match="link in the result is not a regular file"):
        result_digest(out, SALT)
    (out / "link").unlink()
    os.mkfifo(out / "fifo")
    with pytest.raises(ResultError, match="fifo"):
        result_digest(out, SALT)
    (out / "fifo").unlink()
    with pytest.raises(ResultError, match="salt is 32 bytes"):
        result_digest(out, b"short")


def statement() -> ResultStatement:
    return ResultStatement(
        task_id="0x" + "11" * 32,
        order_hash="0x" + "11" * 32,
        requester="0x" + "22" * 20,
        worker="0x" + "33" * 20,
        token_jti="jti",
        config_hash="44" * 32,
        dataset_checksum="",
        input_digests=("55" * 32, "66" * 32),
        ciphertext_digest="77" * 32,
        result_digest="88" * 32,
        outcome="completed",
        logs_digest="99" * 32,
        output_tags=("tag",),
    )


def test_statement_encoding_known_answer() -> None:
    s = statement()
    texts = (s.task_id, s.order_hash, s.requester, s.worker, "jti", "44" * 32, "")
    inputs = struct.pack(">I", 2) + lp(b"55" * 32) + lp(b"66" * 32)
    expected = (
        lp(b"confide-result-v2")
        + b"".join(lp(t.encode()) for t in texts)
        + lp(inputs)
        + lp(b"77" * 32)
        + lp(b"88" * 32)
        + lp(b"completed")
        + lp(b"99" * 32)
        + lp(struct.pack(">I", 1) + lp(b"tag"))
    )
    assert s.message() == expected
    assert hashlib.sha256(s.message()).hexdigest() == KNOWN_STATEMENT_SHA256


def test_statement_signature_and_json() -> None:
    keys, other = EnclaveKeys.generate(), EnclaveKeys.generate()
    s = statement()
    signature = sign_statement(s, keys)
    assert statement_signed_by(s, signature, keys.ed25519_public)
    assert not statement_signed_by(s, signature, other.ed25519_public)
    assert ResultStatement.from_json(s.to_json()) == s
    for field, value in (
        ("result_digest", "99" * 32),
        ("task_id", "0x" + "12" * 32),
        ("input_digests", ("55" * 32,)),
        ("output_tags", ()),
        ("outcome", "failed:APP_COMPUTE_FAILED"),
        ("logs_digest", ""),
        ("logs_digest", "aa" * 32),
    ):
        changed = ResultStatement.from_json(
            {**s.to_json(), field: value if isinstance(value, str) else list(value)}
        )
        assert not statement_signed_by(changed, signature, keys.ed25519_public), field
    assert not statement_signed_by(s, "zz", keys.ed25519_public)
    for bad in (
        {**s.to_json(), "extra": 1},
        {"task_id": s.task_id},
        {**s.to_json(), "result_digest": "XY"},
        {**s.to_json(), "input_digests": "x"},
        {**s.to_json(), "outcome": "COMPLETED"},
        {**s.to_json(), "outcome": "failed:"},
        {**s.to_json(), "outcome": "failed:x\x1b[2J"},
        {**s.to_json(), "logs_digest": "AB" * 32},
        {key: value for key, value in s.to_json().items() if key != "outcome"},
        {key: value for key, value in s.to_json().items() if key != "logs_digest"},
    ):
        with pytest.raises(ResultError):
            ResultStatement.from_json(bad)
    without_tags = s.to_json()
    del without_tags["output_tags"]
    assert ResultStatement.from_json(without_tags).output_tags == ()
    failed = ResultStatement.from_json({**s.to_json(), "outcome": "failed:POST_COMPUTE_FAILED"})
    assert not failed.completed and failed.failure_cause == "POST_COMPUTE_FAILED"
    assert s.completed and s.failure_cause is None


def test_a_v1_signature_does_not_pass_for_v2() -> None:
    """The label changed with the fields: a statement signed the v1 way never verifies."""
    keys = EnclaveKeys.generate()
    s = statement()
    v1 = keys.signing.sign(b"confide-result-v1", s.message()[len(lp(b"confide-result-v2")) :])
    assert not statement_signed_by(s, v1.hex(), keys.ed25519_public)


KNOWN_DIGEST = "aca9f74e07acef5631f3298e4340b9a29db2406903c78e98e3fcf2e78a537f67"
KNOWN_STATEMENT_SHA256 = "b1492c98d0233c33f0bfe787f3bc83816898000a0bb77298b877f8276d5607c8"
