"""Sealing to an enclave (HPKE) and secrets at rest (envelope encryption)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from confide.crypto.encoding import lp
from confide.crypto.envelope import (
    KeyEncryptionKey,
    SealedValue,
    SecretContext,
    open_value,
    seal_value,
)
from confide.crypto.sealing import (
    EnclaveKeys,
    canonical_json,
    config_hash,
    seal_for_enclave,
    sealed_document,
    sealed_payload,
    sealing_info,
)
from confide.errors import AttestationError, SecretError

INFO = sealing_info(sms_id="sms-1", subject="task-9", service="app", nonce=b"\x01" * 32)


def test_sealed_configuration_opens_only_in_its_enclave_and_context() -> None:
    enclave = EnclaveKeys.generate()
    sealed = seal_for_enclave(b"API_KEY=s3cret", enclave.x25519_public, INFO)
    assert b"s3cret" not in sealed
    assert enclave.open_sealed(sealed, INFO) == b"API_KEY=s3cret"
    with pytest.raises(AttestationError, match="not for this enclave"):
        EnclaveKeys.generate().open_sealed(sealed, INFO)
    for other in (
        sealing_info(sms_id="sms-2", subject="task-9", service="app", nonce=b"\x01" * 32),
        sealing_info(sms_id="sms-1", subject="task-8", service="app", nonce=b"\x01" * 32),
        sealing_info(sms_id="sms-1", subject="task-9", service="db", nonce=b"\x01" * 32),
        sealing_info(sms_id="sms-1", subject="task-9", service="app", nonce=b"\x02" * 32),
    ):
        with pytest.raises(AttestationError):
            enclave.open_sealed(sealed, other)
    tampered = bytearray(sealed)
    tampered[40] ^= 1
    with pytest.raises(AttestationError):
        enclave.open_sealed(bytes(tampered), INFO)
    assert "redacted" in repr(enclave)
    with pytest.raises(AttestationError, match="malformed"):
        seal_for_enclave(b"x", b"short", INFO)


CONTEXT = SecretContext(
    row_id="r-1", owner="0xowner", kind="requester", name="x1", version=2, subject=""
)


@pytest.fixture
def kek(tmp_path: Path) -> KeyEncryptionKey:
    return KeyEncryptionKey.load_or_create(tmp_path / "kek")


@pytest.mark.parametrize(
    "config",
    [
        {"format": "confide-config-v1", "environment": {"Z": "1", "A": 'é\u2028"x'}},
        {"volumes": [{"name": "out", "key": None, "tag": None}], "command": "a b"},
        {},
    ],
)
def test_the_sealed_payload_is_the_canonical_json_of_config_and_token(config: object) -> None:
    """Made from the configuration's canonical JSON once (its hash is of the same bytes),
    it is byte for byte what the enclave would make of the two as one document."""
    token = "eyJhbGciOiJFZERTQSJ9.eyJ4IjoxfQ.c2ln"
    encoded, digest = sealed_document(config)
    assert encoded == canonical_json(config)
    assert digest == config_hash(config)
    assert sealed_payload(encoded, token) == canonical_json({"config": config, "token": token})


def test_kek_file_is_private_and_stable(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    path = tmp_path / "kek"
    assert path.stat().st_mode & 0o777 == 0o600
    again = KeyEncryptionKey.load_or_create(path)
    sealed = seal_value(kek, b"value", CONTEXT)
    assert open_value({again.kek_id: again}, sealed, CONTEXT) == b"value"
    path.write_text("garbage\n")
    with pytest.raises(SecretError, match="is not a KEK"):
        KeyEncryptionKey.load_or_create(path)


def test_round_trip_and_nothing_in_the_clear(kek: KeyEncryptionKey) -> None:
    sealed = seal_value(kek, b"the secret value", CONTEXT)
    assert b"the secret value" not in sealed.ciphertext + sealed.wrapped_key
    assert open_value({kek.kek_id: kek}, sealed, CONTEXT) == b"the secret value"


@pytest.mark.parametrize(
    "field", ["row_id", "owner", "kind", "name", "version", "subject", "policy"]
)
def test_a_value_moved_to_another_context_does_not_open(kek: KeyEncryptionKey, field: str) -> None:
    sealed = seal_value(kek, b"value", CONTEXT)
    changes: dict[str, object] = {field: 3 if field == "version" else "other"}
    other = dataclasses.replace(CONTEXT, **changes)  # type: ignore[arg-type]
    with pytest.raises(SecretError, match="failed authentication"):
        open_value({kek.kek_id: kek}, sealed, other)


def test_a_release_policy_is_bound_and_the_default_adds_no_field(kek: KeyEncryptionKey) -> None:
    strict = dataclasses.replace(CONTEXT, policy='{"tee":["sgx"]}')
    sealed = seal_value(kek, b"value", strict)
    assert open_value({kek.kek_id: kek}, sealed, strict) == b"value"
    for widened in ("", '{"tee":["sgx","sim"]}'):  # dropped, or edited to allow more
        with pytest.raises(SecretError, match="release policy"):
            open_value({kek.kek_id: kek}, sealed, dataclasses.replace(strict, policy=widened))
    # Rows sealed before policies existed (default policy) keep their associated data.
    fields = (
        b"confide-secret-at-rest-v1",
        b"r-1",
        b"0xowner",
        b"requester",
        b"x1",
        b"2",
        b"",
        kek.kek_id.encode(),
    )
    assert CONTEXT.aad(kek.kek_id) == b"".join(lp(field) for field in fields)


def test_tampering_and_unknown_or_wrong_kek(kek: KeyEncryptionKey) -> None:
    sealed = seal_value(kek, b"value", CONTEXT)
    flipped = bytearray(sealed.ciphertext)
    flipped[-1] ^= 1
    with pytest.raises(SecretError, match="failed authentication"):
        open_value(
            {kek.kek_id: kek}, dataclasses.replace(sealed, ciphertext=bytes(flipped)), CONTEXT
        )
    with pytest.raises(SecretError, match="not loaded"):
        open_value({}, sealed, CONTEXT)
    impostor = KeyEncryptionKey(kek.kek_id, b"\x00" * 32)
    with pytest.raises(SecretError, match="failed authentication"):
        open_value({kek.kek_id: impostor}, sealed, CONTEXT)
    relabelled = SealedValue("k2", sealed.wrapped_key, sealed.ciphertext)
    k2 = KeyEncryptionKey("k2", b"\x00" * 32)
    with pytest.raises(SecretError):
        open_value({"k2": k2}, relabelled, CONTEXT)


def test_sealing_to_any_x25519_key_opens_only_with_its_private_key_and_context() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from confide.crypto.sealing import open_with, seal_to

    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    sealed = seal_to(b"the data key", public, b"confide-result-v1|task")
    assert open_with(sealed, private, b"confide-result-v1|task") == b"the data key"
    flipped = sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:]
    attempts: list[tuple[bytes, X25519PrivateKey, bytes]] = [
        (sealed, private, b"confide-result-v1|other task"),
        (sealed, X25519PrivateKey.generate(), b"confide-result-v1|task"),
        (flipped, private, b"confide-result-v1|task"),
        (sealed[:20], private, b"confide-result-v1|task"),
    ]
    for blob, key, info in attempts:
        with pytest.raises(ValueError, match="do not open"):
            open_with(blob, key, info)
    with pytest.raises(ValueError, match="32 bytes"):
        seal_to(b"x", b"short", b"info")
