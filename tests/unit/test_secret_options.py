"""Push options (release policies, any-app included) and result-encryption keys."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from confide.attestation.measurement import Measurement
from confide.crypto.result_key import (
    ResultKeyPair,
    check_public_key,
    public_key_from_file,
    result_key_sha256,
)
from confide.errors import KeyFileError, SecretError
from confide.sms.release_policy import ReleasePolicy

SGX = "sgx:" + "ab" * 32
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
POOL = "0x" + "c3" * 20


def test_query_options_round_trip_through_the_canonical_form() -> None:
    policy = ReleasePolicy.from_query(
        [
            ("tee", "TDX, sgx"),
            ("tolerate", "outdated-tcb"),
            ("app", SGX.upper()),
            ("requester", ALICE.upper().replace("0X", "0x")),
            ("requester", BOB),
            ("workerpool", POOL),
        ],
        restrictable=True,
    )
    assert policy == ReleasePolicy(
        tee=frozenset({"sgx", "tdx"}),
        tolerate=frozenset({"outdated-tcb"}),
        apps=frozenset({Measurement.parse(SGX)}),
        requesters=frozenset({ALICE, BOB}),
        workerpools=frozenset({POOL}),
    )
    assert ReleasePolicy.from_query(policy.query_items(), restrictable=True) == policy
    assert ReleasePolicy.from_json(policy.canonical()) == policy
    assert ReleasePolicy.from_query([], restrictable=False).canonical() == ""


@pytest.mark.parametrize(
    ("items", "restrictable", "named"),
    [
        ([("tee", "sgz")], False, "unknown TEE type 'sgz'"),
        ([("tee", "")], False, "'tee' has an empty value"),
        ([("tolerate", "sgx,everything")], False, "unknown toleration 'everything'"),
        ([("app", "ab" * 32)], True, "is not typed"),
        ([("app", "sgx:1234")], True, "64 hex"),
        ([("requester", "0x1234")], True, "'0x1234' is not a wallet address"),
        ([("workerpool", "0x" + "zz" * 20)], True, "is not a wallet address"),
        ([("app", SGX)], False, "only a dataset key"),
        ([("tolerated", "debug-mode")], True, "unknown release policy option 'tolerated'"),
    ],
)
def test_bad_options_are_refused_naming_the_value(
    items: list[tuple[str, str]], restrictable: bool, named: str
) -> None:
    with pytest.raises(SecretError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ReleasePolicy.from_query(items, restrictable=restrictable)


def test_any_app_is_explicit_and_in_the_canonical_form() -> None:
    """A dataset key for any app says so (``any-app=true``): it is in the canonical JSON,
    so bound into the value's associated data; a policy without it keeps the form every
    policy stored before it had."""
    policy = ReleasePolicy.from_query([("any-app", "true")], restrictable=True)
    assert policy == ReleasePolicy(any_app=True) and policy.apps is None
    assert ("any-app", "true") in policy.query_items()
    assert '"any_app":true' in policy.canonical()
    assert ReleasePolicy.from_json(policy.canonical()) == policy
    assert ReleasePolicy.from_query(policy.query_items(), restrictable=True) == policy
    restricted = ReleasePolicy(apps=frozenset({Measurement.parse(SGX)}))
    assert "any_app" not in restricted.canonical()


@pytest.mark.parametrize(
    ("items", "restrictable", "named"),
    [
        ([("any-app", "yes")], True, "any-app is given once, as true"),
        ([("any-app", "true"), ("any-app", "true")], True, "any-app is given once"),
        ([("any-app", "true"), ("app", SGX)], True, "contradict each other"),
        ([("any-app", "true")], False, "only a dataset key"),
    ],
)
def test_bad_any_app_options_are_refused(
    items: list[tuple[str, str]], restrictable: bool, named: str
) -> None:
    with pytest.raises(SecretError, match=named):
        ReleasePolicy.from_query(items, restrictable=restrictable)


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ('{"any_app": "yes"}', "any_app must be true or false"),
        (f'{{"any_app": true, "apps": ["{SGX}"]}}', "contradict each other"),
    ],
)
def test_a_stored_policy_with_a_bad_any_app_is_refused(document: str, named: str) -> None:
    with pytest.raises(SecretError, match=named):
        ReleasePolicy.from_json(document)


def test_result_key_file_is_private_and_never_replaced_silently(tmp_path: Path) -> None:
    path = tmp_path / "home" / "result-key"
    pair = ResultKeyPair.generate()
    pair.write(path, overwrite=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "redacted" in repr(pair)
    assert public_key_from_file(path) == pair.public_bytes
    with pytest.raises(KeyFileError, match="already exists; not overwritten"):
        ResultKeyPair.generate().write(path, overwrite=False)
    assert public_key_from_file(path) == pair.public_bytes
    other = ResultKeyPair.generate()
    other.write(path, overwrite=True)
    assert public_key_from_file(path) == other.public_bytes != pair.public_bytes
    assert [p.name for p in path.parent.iterdir()] == ["result-key"]  # no temporary left


def test_public_key_files_and_bad_keys(tmp_path: Path) -> None:
    private = X25519PrivateKey.generate()
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    (tmp_path / "hex").write_text("0x" + raw.hex().upper() + "\n")
    (tmp_path / "pem").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert public_key_from_file(tmp_path / "hex") == raw == public_key_from_file(tmp_path / "pem")
    assert result_key_sha256(raw) == hashlib.sha256(raw).hexdigest()
    (tmp_path / "junk").write_bytes(os.urandom(40))
    with pytest.raises(KeyFileError, match="holds no X25519 key"):
        public_key_from_file(tmp_path / "junk")
    with pytest.raises(KeyFileError, match="generate-encryption-keypair"):
        public_key_from_file(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="32-byte"):
        check_public_key(raw[:31])
    with pytest.raises(KeyFileError, match="not a usable X25519 key"):
        check_public_key(bytes(32))  # a low-order point: every shared secret would be zero
