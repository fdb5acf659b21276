"""Ethereum keystores (Web3 Secret Storage, JSON v3): a wallet's key under a password.

Written as geth and eth-account write them (scrypt n=2^18, r=8, p=1; AES-128-CTR; the
MAC is Keccak-256 of the derived key's second half and the ciphertext), and read with
either of the format's KDFs (scrypt, or PBKDF2-HMAC-SHA256), so a wallet moves freely
between confide and other Ethereum tools. confide reads and writes it itself, with
``cryptography`` and ``eth-hash``: eth-keyfile would import py_ecc's BLS curves on every
command (half a second) for its v4 format, which confide never uses. The scrypt cost is
kept on purpose: it is what a stolen keystore costs to attack per guessed password.

The ciphers are imported when a keystore is opened or written, not with this module:
``confide wallet show`` reads only the address and should start in a blink.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from pathlib import Path
from typing import Any

from confide.errors import WalletError

SCRYPT_N = 1 << 18  # geth's "standard" scrypt cost, eth-account's default
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
# Bounds on a keystore's own parameters: a hostile file must not make opening it cost
# gigabytes of memory or hours of CPU (geth's "light" and "standard" settings fit).
_MAX_SCRYPT_MEMORY = 1 << 30  # 128 * r * n * p bytes
_MAX_PBKDF2_ROUNDS = 10_000_000


class WrongPasswordError(WalletError):
    """The keystore's MAC does not match: the password is wrong (or the file damaged)."""


def read_keystore(path: Path) -> dict[str, Any]:
    """The keystore document at ``path``, checked to be JSON v3 (nothing decrypted)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise WalletError(f"no wallet at {path}; create one with `confide wallet create`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise WalletError(f"{path} is not a wallet keystore (JSON v3)") from None
    if not isinstance(document, dict) or document.get("version") != 3:
        raise WalletError(f"{path} is not a wallet keystore (JSON v3)")
    return document


def keystore_address(path: Path) -> str:
    """The wallet's address, read from the keystore without its password."""
    address = read_keystore(path).get("address")
    if not isinstance(address, str) or not re.fullmatch(r"(0x)?[0-9a-fA-F]{40}", address):
        raise WalletError(f"{path} does not name its address")
    return "0x" + address.lower().removeprefix("0x")


def encrypt_keystore(private_key: bytes, password: str, address: str) -> dict[str, Any]:
    """The JSON v3 keystore of ``private_key`` (32 bytes) under ``password``."""
    import uuid  # noqa: PLC0415

    from eth_hash.auto import keccak  # noqa: PLC0415

    salt = os.urandom(16)
    derived = _scrypt(password.encode(), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    iv = os.urandom(16)
    ciphertext = _aes_128_ctr(derived[:16], iv, private_key)
    return {
        "address": address.removeprefix("0x"),
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(),
            "kdf": "scrypt",
            "kdfparams": {
                "dklen": _DKLEN,
                "n": SCRYPT_N,
                "r": SCRYPT_R,
                "p": SCRYPT_P,
                "salt": salt.hex(),
            },
            "mac": keccak(derived[16:32] + ciphertext).hex(),
        },
        "id": str(uuid.uuid4()),
        "version": 3,
    }


def decrypt_keystore(document: dict[str, Any], password: str) -> bytes:
    """The private key in a JSON v3 keystore; ``WrongPasswordError`` if the MAC differs.

    Key names are compared in lower case (old geth files say ``Crypto``). The cheap
    checks come before the KDF, and Keccak is imported after it: on a background thread
    (``confide.crypto.unlock``) scrypt then starts as early as it can.
    """
    crypto = _lower_keys(document).get("crypto")
    try:
        if not isinstance(crypto, dict) or crypto.get("cipher") != "aes-128-ctr":
            raise ValueError("cipher")
        ciphertext = bytes.fromhex(crypto["ciphertext"])
        mac = bytes.fromhex(crypto["mac"])
        iv = bytes.fromhex(crypto["cipherparams"]["iv"])
        if len(iv) != 16 or len(ciphertext) != 32:
            raise ValueError("iv or ciphertext length")
        derived = _derive(crypto["kdf"], crypto["kdfparams"], password.encode())
    except (KeyError, TypeError, ValueError, AttributeError):
        raise WalletError(
            "the keystore is malformed or uses a cipher or KDF confide does not read "
            "(aes-128-ctr with scrypt or pbkdf2)"
        ) from None
    from eth_hash.auto import keccak  # noqa: PLC0415

    if not hmac.compare_digest(keccak(derived[16:32] + ciphertext), mac):
        raise WrongPasswordError("wrong password")
    return _aes_128_ctr(derived[:16], iv, ciphertext)


def unlock_keystore(path: Path, password: str) -> bytes:
    """The private key of the keystore at ``path``; every refusal names the file."""
    document = read_keystore(path)
    try:
        return decrypt_keystore(document, password)
    except WrongPasswordError:
        raise WalletError(f"wrong password for wallet {path}") from None
    except WalletError as exc:
        raise WalletError(f"{path}: {exc}") from None


def _derive(kdf: str, params: dict[str, Any], password: bytes) -> bytes:
    if params["dklen"] != _DKLEN:
        raise ValueError("dklen")
    salt = bytes.fromhex(params["salt"])
    if kdf == "scrypt":
        n, r, p = (params[name] for name in ("n", "r", "p"))
        if not all(isinstance(x, int) and x > 0 for x in (n, r, p)):
            raise ValueError("scrypt parameters")
        if 128 * r * n * p > _MAX_SCRYPT_MEMORY:
            raise ValueError("scrypt cost")
        return _scrypt(password, salt, n, r, p)
    if kdf == "pbkdf2":
        rounds = params["c"]
        if params["prf"] != "hmac-sha256" or not isinstance(rounds, int):
            raise ValueError("prf")
        if not 0 < rounds <= _MAX_PBKDF2_ROUNDS:
            raise ValueError("pbkdf2 cost")
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC  # noqa: PLC0415

        return PBKDF2HMAC(hashes.SHA256(), _DKLEN, salt, rounds).derive(password)
    raise ValueError("kdf")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # noqa: PLC0415

    return Scrypt(salt, _DKLEN, n, r, p).derive(password)


def _aes_128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CTR with the 16-byte IV as the initial counter block (the same both ways)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    encryptor = Cipher(algorithms.AES128(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    return value
