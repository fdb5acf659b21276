"""recover_signer (coincurve directly) agrees with eth-account's recover_message."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from confide.crypto.wallet import Wallet, recover_signer
from confide.errors import AuthError

CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MESSAGES = ["", "hello", "é ✓ \n\x00 line", "x" * 1000, "confide-request-v1\nsms/d\nPUT"]


def eth_account_recover(message: str, raw: bytes) -> str | None:
    try:
        return str(Account.recover_message(encode_defunct(text=message), signature=raw)).lower()
    except Exception:
        return None


def ours(message: str, raw: bytes) -> str | None:
    try:
        return recover_signer(message, "0x" + raw.hex())
    except AuthError:
        return None


@pytest.mark.parametrize("message", MESSAGES)
def test_recovers_what_eth_account_recovers(message: str) -> None:
    for _ in range(10):
        wallet = Wallet.generate()
        raw = bytes.fromhex(wallet.sign_text(message).removeprefix("0x"))
        assert ours(message, raw) == eth_account_recover(message, raw) == wallet.address
        assert recover_signer(message, raw.hex()) == wallet.address  # 0x is optional
        other = ours(message + "!", raw)
        assert other == eth_account_recover(message + "!", raw) != wallet.address


def test_signature_forms_agree_with_eth_account() -> None:
    wallet = Wallet.generate()
    message = "hello"
    raw = bytes.fromhex(wallet.sign_text(message).removeprefix("0x"))
    r, s, v = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    assert v in (27, 28)
    # v as 0/1, and the malleated high-s twin: both name the same signer, as in eth-account
    # (replay protection rests on the nonce, not on the signature's bytes).
    forms = [
        raw[:64] + bytes((v - 27,)),
        r + (CURVE_ORDER - s).to_bytes(32, "big") + bytes((55 - v,)),
    ]
    for form in forms:
        assert ours(message, form) == eth_account_recover(message, form) == wallet.address
    refused = [
        bytes(32) + raw[32:],  # r = 0
        r + bytes(32) + raw[64:],  # s = 0
        CURVE_ORDER.to_bytes(32, "big") + raw[32:],  # r >= n
        r + CURVE_ORDER.to_bytes(32, "big") + raw[64:],  # s >= n
        raw[:64] + bytes((29,)),
        raw[:64] + bytes((2,)),
        raw[:64],
        raw + b"\x00",
    ]
    for form in refused:
        assert ours(message, form) is None
        assert eth_account_recover(message, form) is None
    # EIP-155 v values (35 and up) are transaction signatures: eth-account takes them,
    # a signed request never carries them, and they are refused.
    assert ours(message, raw[:64] + bytes((37,))) is None
    for text in ("0xzz", "", "0x" + os.urandom(65).hex()[:-2] + "ff"):
        with pytest.raises(AuthError):
            recover_signer(message, text)
