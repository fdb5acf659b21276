"""confide's own keystore and signer agree with eth-account's, byte for byte, both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from confide.crypto.keystore import (
    SCRYPT_N,
    WrongPasswordError,
    decrypt_keystore,
    keystore_address,
)
from confide.crypto.unlock import unlock_wallet
from confide.crypto.wallet import (
    Wallet,
    checksum_address,
    load_wallet,
    save_wallet,
)
from confide.errors import WalletError

KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY_BYTES = bytes.fromhex(KEY)
MESSAGES = ["", "hello", "é ✓ \n\x00 line", "confide-request-v1\nsms/d\nPUT"]


def _light() -> dict[str, Any]:
    """A keystore of KEY under "pw" with a cheap scrypt, so tests run fast."""
    return Account.encrypt(KEY_BYTES, "pw", kdf="scrypt", iterations=1024)


def test_signatures_are_eth_accounts_byte_for_byte() -> None:
    wallet = Wallet.from_private_key(KEY)
    account = Account.from_key(KEY_BYTES)
    assert wallet.address == account.address.lower()
    assert checksum_address(wallet.address) == account.address  # EIP-55
    for message in MESSAGES:
        theirs = Account.sign_message(encode_defunct(text=message), KEY_BYTES).signature
        assert wallet.sign_text(message) == "0x" + bytes(theirs).hex()
    for _ in range(5):
        fresh = Wallet.generate()
        assert fresh.address == Account.from_key(fresh._key.secret).address.lower()


def test_a_keystore_confide_writes_opens_with_eth_account(tmp_path: Path) -> None:
    wallet = Wallet.from_private_key(KEY)
    save_wallet(tmp_path / "w.json", wallet, "pässword")
    document = json.loads((tmp_path / "w.json").read_text())
    assert document["version"] == 3
    assert document["crypto"]["kdf"] == "scrypt"
    assert document["crypto"]["kdfparams"]["n"] == SCRYPT_N == 2**18  # the cost is kept
    assert document["address"] == Account.from_key(KEY_BYTES).address.removeprefix("0x")
    assert bytes(Account.decrypt(document, "pässword")).hex() == KEY
    assert keystore_address(tmp_path / "w.json") == wallet.address


def test_keystores_eth_account_writes_open_in_confide(tmp_path: Path) -> None:
    kdfs: tuple[tuple[Literal["scrypt", "pbkdf2"], int], ...] = (("scrypt", 1024), ("pbkdf2", 1000))
    for kdf, cost in kdfs:
        document = Account.encrypt(KEY_BYTES, "pässword", kdf=kdf, iterations=cost)
        assert decrypt_keystore(document, "pässword").hex() == KEY
        path = tmp_path / f"{kdf}.json"
        path.write_text(json.dumps(document))
        assert load_wallet(path, "pässword").address == Account.from_key(KEY_BYTES).address.lower()
    geth_style = Account.encrypt(KEY_BYTES, "pw", kdf="scrypt", iterations=1024)
    geth_style["Crypto"] = geth_style.pop("crypto")  # old geth files capitalise it
    assert decrypt_keystore(geth_style, "pw").hex() == KEY


def test_a_wrong_password_or_a_changed_byte_is_refused(tmp_path: Path) -> None:
    document = _light()
    with pytest.raises(WrongPasswordError):
        decrypt_keystore(document, "other")
    changed = json.loads(json.dumps(document))
    ciphertext = changed["crypto"]["ciphertext"]
    changed["crypto"]["ciphertext"] = ("0" if ciphertext[0] != "0" else "1") + ciphertext[1:]
    with pytest.raises(WrongPasswordError):
        decrypt_keystore(changed, "pw")
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    with pytest.raises(WalletError, match="wrong password for wallet"):
        load_wallet(path, "other")


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("cipher", "aes-128-cbc"),
        ("kdf", "argon2"),
        ("n", 2**22),  # 4 GiB of scrypt memory: a hostile file must not cost that
        ("n", 1000),  # not a power of two
        ("c", 10**9),
        ("dklen", 16),
        ("mac", "zz"),
    ],
)
def test_a_malformed_or_too_costly_keystore_is_refused(where: str, value: object) -> None:
    document = json.loads(json.dumps(_light()))
    if where == "c":
        document = Account.encrypt(KEY_BYTES, "pw", kdf="pbkdf2", iterations=1000)
        document["crypto"]["kdfparams"]["c"] = value
    elif where in ("n", "dklen"):
        document["crypto"]["kdfparams"][where] = value
    else:
        document["crypto"][where] = value
    with pytest.raises(WalletError, match="malformed") as raised:
        decrypt_keystore(document, "pw")
    assert not isinstance(raised.value, WrongPasswordError)


def test_unlocking_in_the_background_gives_the_wallet_or_the_refusal(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(_light()))
    assert unlock_wallet(path, "pw").wait().address == Account.from_key(KEY_BYTES).address.lower()
    with pytest.raises(WalletError, match="wrong password"):
        unlock_wallet(path, "other").wait()
    with pytest.raises(WalletError, match="no wallet at"):
        unlock_wallet(tmp_path / "missing.json", "pw").wait()
