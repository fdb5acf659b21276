"""Known-answer and tamper tests for the crypto layer."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from confide.crypto import (
    SymmetricKey,
    lp,
    open_manifest,
    read_key_file,
    seal_manifest,
    segment_cipher,
    write_key_file,
)
from confide.crypto.digest import chunk_digest, list_digest
from confide.crypto.kdf import SubkeyDeriver, derive_subkey
from confide.crypto.segment import SegmentAuthenticationError, stream_nonce
from confide.crypto.signing import SigningKey
from confide.errors import AuthError, KeyFileError


def test_length_prefix_is_unambiguous() -> None:
    assert lp(b"") == b"\x00\x00\x00\x00"
    assert lp(b"abc") == b"\x00\x00\x00\x03abc"
    assert lp(b"ab") + lp(b"c") != lp(b"a") + lp(b"bc")


def test_hkdf_extract_matches_rfc5869_case_1() -> None:
    # RFC 5869, appendix A.1.
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    deriver = SubkeyDeriver(ikm, salt)
    prk = "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    assert deriver._prk.hex() == prk
    okm = HKDF(hashes.SHA256(), 42, salt, bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")).derive(ikm)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_subkey_deriver_is_standard_hkdf_with_length_prefixed_label() -> None:
    root, salt = bytes(range(32)), b"confide-volume"
    expected = HKDF(hashes.SHA256(), 32, salt, lp(b"label") + b"ctx").derive(root)
    assert SubkeyDeriver(root, salt).derive(b"label", b"c", b"tx") == expected
    assert derive_subkey(root, salt, b"label", b"ctx") == expected
    assert SubkeyDeriver(root, salt).derive(b"other", b"ctx") != expected


def test_stream_nonce_layout() -> None:
    assert stream_nonce(0, False) == bytes(12)
    assert stream_nonce(0, True) == bytes(11) + b"\x01"
    assert stream_nonce(258, False) == bytes(9) + b"\x01\x02" + b"\x00"
    with pytest.raises(ValueError, match="counter"):
        stream_nonce(-1, False)


def test_segment_cipher_known_answer() -> None:
    # AES-256-GCM, NIST GCM spec test case 16's key, our STREAM nonce for segment 1, last.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308" * 2)
    sealed = segment_cipher(key).seal(1, True, b"confide segment")
    assert len(sealed) == len(b"confide segment") + 16
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert sealed == AESGCM(key).encrypt(bytes(10) + b"\x01\x01", b"confide segment", None)


def test_manifest_seal_known_answer_and_tamper() -> None:
    # The volume format: AES-256-GCM under the single-use manifest key, a zero nonce and
    # the clear header as associated data.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308" * 2)
    sealed = seal_manifest(key, b'{"entries":[]}', b"header")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert sealed == AESGCM(key).encrypt(bytes(12), b'{"entries":[]}', b"header")
    assert open_manifest(key, sealed, b"header") == b'{"entries":[]}'
    for changed in (sealed[:-1] + bytes([sealed[-1] ^ 1]), sealed[:-1]):
        with pytest.raises(SegmentAuthenticationError):
            open_manifest(key, changed, b"header")
    with pytest.raises(SegmentAuthenticationError):
        open_manifest(key, sealed, b"Header")
    with pytest.raises(SegmentAuthenticationError):
        open_manifest(bytes(32), sealed, b"header")


def test_segment_cipher_in_place_matches_allocating_api() -> None:
    cipher = segment_cipher(bytes(32))
    data = b"x" * 1000
    out = bytearray(2000)
    size = cipher.seal_into(3, False, memoryview(data), out)
    assert bytes(out[:size]) == cipher.seal(3, False, data)
    plain = bytearray(2000)
    opened = cipher.open_into(3, False, memoryview(out)[:size], plain)
    assert bytes(plain[:opened]) == data


@pytest.mark.parametrize(
    ("index", "last"),
    [(1, False), (0, True)],  # wrong position, wrong last flag
)
def test_segment_opened_at_wrong_position_fails(index: int, last: bool) -> None:
    cipher = segment_cipher(bytes(32))
    sealed = cipher.seal(0, False, b"segment zero")
    with pytest.raises(SegmentAuthenticationError):
        cipher.open(index, last, sealed)


def test_segment_tamper_fails() -> None:
    cipher = segment_cipher(bytes(32))
    sealed = bytearray(cipher.seal(0, True, b"segment"))
    for position in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x80
        with pytest.raises(SegmentAuthenticationError):
            cipher.open(0, True, bytes(tampered))
    with pytest.raises(SegmentAuthenticationError):
        cipher.open_into(0, True, memoryview(b"short"), bytearray(16))


def test_keys_never_show_their_value() -> None:
    key = SymmetricKey.generate()
    for text in (repr(key), str(key), f"{key}", repr(segment_cipher(key.expose()))):
        assert key.to_hex() not in text
        assert "redacted" in text
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(key)
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(segment_cipher(key.expose()))


def test_key_file_round_trip_is_private(tmp_path: Path) -> None:
    key = SymmetricKey.generate()
    path = tmp_path / "k.key"
    write_key_file(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == key.to_hex() + "\n"
    assert read_key_file(path).expose() == key.expose()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, SymmetricKey.generate())
    assert read_key_file(path).expose() == key.expose()
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


@pytest.mark.parametrize(
    "content",
    ["", "abc\n", "00" * 31 + "\n", "AB" * 32 + "\n", "zz" * 32, "00" * 33],
)
def test_malformed_key_file_refused_without_echo(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(KeyFileError, match="malformed") as info:
        read_key_file(path)
    if content.strip():
        assert content.strip() not in str(info.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "nope.key")


def test_chunk_digest_is_blake3_known_answer() -> None:
    # BLAKE3 reference test: BLAKE3("abc").
    expected = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    assert chunk_digest(b"abc").hex() == expected
    assert chunk_digest(memoryview(bytearray(b"abcdef"))[:3]).hex() == expected
    # BLAKE3 of the empty input, from the BLAKE3 specification's test vectors.
    assert chunk_digest(b"").hex() == (
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    )


def test_list_digest_binds_label_count_and_order() -> None:
    leaves = [chunk_digest(b"a"), chunk_digest(b"b")]
    value = list_digest(b"label", leaves)
    assert value == chunk_digest(lp(b"label") + (2).to_bytes(8, "big") + b"".join(leaves))
    assert value != list_digest(b"label", leaves[::-1])
    assert value != list_digest(b"other", leaves)
    assert list_digest(b"label", []) != list_digest(b"label", [b""])


def test_an_ed25519_key_of_small_order_proves_nothing() -> None:
    """A signature of zeros verifies under the all-zero key for some messages (its order
    is 4): such keys are refused, so a service cannot 'prove' a key it does not hold."""
    from confide.crypto.info_proof import jwks_key
    from confide.crypto.signing import is_weak_public_key, verify_signature

    weak = bytes(32)
    assert is_weak_public_key(weak)
    assert is_weak_public_key(bytes(31) + b"\x80")  # the same point, sign bit set
    assert not is_weak_public_key(SigningKey.generate().public_bytes())
    assert not any(
        verify_signature(weak, b"label", i.to_bytes(4, "big"), bytes(64)) for i in range(64)
    )
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}]}
    with pytest.raises(AuthError, match="small order"):
        jwks_key(jwks)
