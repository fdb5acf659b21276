"""The signed-request scheme: what a signature binds, and every way it is refused."""

from __future__ import annotations

from typing import Any

import pytest

from confide.crypto.requests import (
    HEADER_ADDRESS,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    canonical_query,
    canonical_request,
    sign_request,
    verify_request,
)
from confide.crypto.wallet import Wallet, normalise_address, recover_signer
from confide.errors import AuthError

NOW = 1_800_000_000
REQUEST = {
    "audience": "sms/deployment-1",
    "method": "PUT",
    "path": "/v1/requesters/0xabc/secrets/x1",
    "query": "update=true",
    "content_type": "application/octet-stream",
    "body": b"secret value",
}


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet.generate()


def _verify(headers: dict[str, str], **changes: object) -> object:
    values: dict[str, object] = {**REQUEST, "now": NOW}
    values.update(changes)
    return verify_request(headers, **values)  # type: ignore[arg-type]


def test_round_trip_and_header_case(wallet: Wallet) -> None:
    headers = sign_request(wallet, now=NOW, **REQUEST)  # type: ignore[arg-type]
    signed = _verify(headers)
    assert signed.address == wallet.address  # type: ignore[attr-defined]
    lower = {k.lower(): v for k, v in headers.items()}
    assert _verify(lower) == signed
    assert len(headers[HEADER_NONCE]) == 32


def test_canonical_text_is_exactly_the_documented_one() -> None:
    text = canonical_request(
        audience="sms/d",
        method="get",
        path="/v1/x",
        query="a=1",
        content_type="",
        body=b"",
        timestamp=5,
        nonce="00" * 16,
    )
    assert text == (
        "confide-request-v1\nsms/d\nGET\n/v1/x?a=1\n\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n5\n" + "00" * 16
    )
    assert canonical_query({"b": "2", "a": "x y/z"}) == "a=x%20y%2Fz&b=2"


@pytest.mark.parametrize(
    "field",
    ["audience", "method", "path", "query", "content_type", "body"],
)
def test_signature_binds_every_field(wallet: Wallet, field: str) -> None:
    headers = sign_request(wallet, now=NOW, **REQUEST)  # type: ignore[arg-type]
    other = b"other" if field == "body" else "other"
    with pytest.raises(AuthError, match="does not match the request"):
        _verify(headers, **{field: other})


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_stale_or_future_timestamps(wallet: Wallet, skew: int) -> None:
    headers = sign_request(wallet, now=NOW, **REQUEST)  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="off the server's clock"):
        _verify(headers, now=NOW + skew)
    assert _verify(headers, now=NOW + 300)


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        (HEADER_ADDRESS, "0x" + "11" * 20, "does not match"),
        (HEADER_ADDRESS, "alice", "not a wallet address"),
        (HEADER_TIMESTAMP, "-5", "Unix time"),
        (HEADER_TIMESTAMP, str(NOW + 1), "does not match"),
        (HEADER_NONCE, "00" * 16, "does not match"),
        (HEADER_NONCE, "xyz", "128 bits"),
        (HEADER_SIGNATURE, "0x" + "00" * 65, "malformed or does not verify"),
        (HEADER_SIGNATURE, "nothex", "malformed"),
    ],
)
def test_tampered_headers(wallet: Wallet, header: str, value: str, message: str) -> None:
    headers = sign_request(wallet, now=NOW, **REQUEST)  # type: ignore[arg-type]
    headers[header] = value
    with pytest.raises(AuthError, match=message):
        _verify(headers)


def test_missing_header(wallet: Wallet) -> None:
    headers = sign_request(wallet, now=NOW, **REQUEST)  # type: ignore[arg-type]
    del headers[HEADER_SIGNATURE]
    with pytest.raises(AuthError, match="not signed: header X-Confide-Signature is missing"):
        _verify(headers)


def test_addresses_any_case_and_wallet_never_shows_its_key(wallet: Wallet) -> None:
    assert normalise_address(wallet.address.upper().replace("0X", "0x")) == wallet.address
    assert "redacted" in repr(wallet)
    signature = wallet.sign_text("hello")
    assert recover_signer("hello", signature) == wallet.address
    assert recover_signer("hello!", signature) != wallet.address


def test_a_body_named_by_its_digest_signs_as_the_body_itself() -> None:
    """A streamed body is signed by its SHA-256: the same signature verifies against the
    bytes or against their digest, and a signature over one digest fails for another."""
    import hashlib

    wallet = Wallet.generate()
    body = b"a blob too large to hold" * 100
    digest = hashlib.sha256(body).hexdigest()
    headers = sign_request(
        wallet,
        audience="storage/d/k",
        method="PUT",
        path="/v1/blobs/x",
        body_sha256=digest,
        now=1000,
    )

    def verify(**body: Any) -> str:
        return verify_request(
            headers,
            audience="storage/d/k",
            method="PUT",
            path="/v1/blobs/x",
            query="",
            content_type="",
            now=1000,
            **body,
        ).address

    assert verify(body=body) == wallet.address
    assert verify(body_sha256=digest) == wallet.address
    with pytest.raises(AuthError, match="does not match"):
        verify(body_sha256="0" * 64)
    with pytest.raises(AuthError, match="64 lower-case hex"):
        sign_request(wallet, audience="a", method="PUT", path="/", body_sha256="ABC", now=1)
