"""A volume key released to a reader: the bytes the sms signs (known answer), and every
change to the context, the sealed bytes or the signer refused before anything opens."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from confide.crypto.signing import SigningKey
from confide.crypto.volume_release import (
    RELEASE_LABEL,
    VolumeRelease,
    open_release,
    seal_release,
)
from confide.errors import AuthError

KEY = bytes(range(32))
SMS = SigningKey.from_seed(b"\x01" * 32)


def reader() -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.from_private_bytes(b"\x02" * 32)
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def release(public: bytes) -> VolumeRelease:
    return VolumeRelease(
        "sms/dep/" + "aa" * 32, "0x" + "11" * 20, "copy", "inputs", "ab" * 32, "cd" * 32, public
    )


def answer(context: VolumeRelease) -> tuple[bytes, bytes]:
    sealed = seal_release(context, KEY)
    return sealed, SMS.sign(RELEASE_LABEL, context.message(sealed))


def test_the_signed_context_is_fixed() -> None:
    """The label, then each field with a 4-byte big-endian length, the reader's key last;
    the signed message appends the sealed bytes the same way."""
    _, public = reader()
    context = release(public)

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    expected = b"confide-volume-key-v1" + b"".join(
        field(text.encode())
        for text in (
            "sms/dep/" + "aa" * 32,
            "0x" + "11" * 20,
            "copy",
            "inputs",
            "ab" * 32,
            "cd" * 32,
        )
    )
    expected += field(public)
    assert context.info() == expected
    assert context.message(b"sealed") == expected + b"\x00\x00\x00\x06sealed"


def test_the_reader_opens_the_key() -> None:
    private, public = reader()
    context = release(public)
    sealed, signature = answer(context)
    assert open_release(context, sealed, signature, SMS.public_bytes(), private) == KEY


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("audience", "sms/other/" + "aa" * 32),
        ("owner", "0x" + "22" * 20),
        ("session", "copy2"),
        ("volume", "outputs"),
        ("tag", "ef" * 32),
        ("blob", "00" * 32),
    ],
)
def test_another_context_is_refused(field: str, value: str) -> None:
    private, public = reader()
    context = release(public)
    sealed, signature = answer(context)
    changed = dataclasses.replace(context, **{field: value})  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="not signed by the pinned sms"):
        open_release(
            changed,
            sealed,
            signature,
            SMS.public_bytes(),
            private,
        )


def test_a_changed_byte_another_signer_or_reader_is_refused() -> None:
    private, public = reader()
    context = release(public)
    sealed, signature = answer(context)
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(AuthError, match="not signed"):
        open_release(context, flipped, signature, SMS.public_bytes(), private)
    other = SigningKey.from_seed(b"\x03" * 32)
    forged = other.sign(RELEASE_LABEL, context.message(sealed))
    with pytest.raises(AuthError, match="not signed"):
        open_release(context, sealed, forged, SMS.public_bytes(), private)
    # The sms signed it, but for another reader's key: it does not open with ours.
    stranger = X25519PrivateKey.generate()
    with pytest.raises(AuthError, match="does not open"):
        open_release(context, sealed, signature, SMS.public_bytes(), stranger)
