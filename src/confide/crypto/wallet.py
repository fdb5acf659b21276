"""Wallets: Ethereum keys in encrypted JSON keystores (v3), and EIP-191 signatures.

Owners, requesters and workers are wallet addresses. A wallet signs text messages with
EIP-191 (``personal_sign``), which any Ethereum tooling can check; the server recovers the
address from the signature (coincurve behind eth-keys does the secp256k1 work).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from confide.crypto.keys import Redacted
from confide.errors import AuthError, WalletError

_RECURSION_LIMIT = sys.getrecursionlimit()
from coincurve import PublicKey  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402
from eth_hash.auto import keccak  # noqa: E402

# py_ecc (imported by eth-account, for curves confide does not use) raises the recursion
# limit to 100,000, process-wide; deep recursion would then overflow the C stack and
# crash instead of raising RecursionError. Put the limit back.
sys.setrecursionlimit(_RECURSION_LIMIT)

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_PRIVATE_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def normalise_address(text: str) -> str:
    """Addresses are accepted in any letter case and compared in lower case."""
    if not _ADDRESS.fullmatch(text.strip()):
        raise AuthError(f"{text!r} is not a wallet address (0x and 40 hex characters)")
    return text.strip().lower()


class Wallet(Redacted):
    """An unlocked wallet: its address and the means to sign, never shown."""

    __slots__ = ("_account",)

    def __init__(self, account: Any) -> None:
        self._account = account

    @property
    def address(self) -> str:
        return str(self._account.address).lower()

    @classmethod
    def generate(cls) -> Wallet:
        return cls(Account.create())

    @classmethod
    def from_private_key(cls, key_hex: str) -> Wallet:
        if not _PRIVATE_KEY.fullmatch(key_hex.strip()):
            raise WalletError("a private key is 64 hex characters (optionally 0x-prefixed)")
        try:
            return cls(Account.from_key(key_hex.strip()))
        except ValueError:  # zero, or not below the curve order
            raise WalletError("that private key is not a valid secp256k1 key") from None

    def sign_text(self, message: str) -> str:
        """EIP-191 signature of ``message``, as 0x-prefixed hex (65 bytes)."""
        signed = Account.sign_message(encode_defunct(text=message), self._account.key)
        return "0x" + bytes(signed.signature).hex()

    def keystore(self, password: str) -> dict[str, Any]:
        document: dict[str, Any] = Account.encrypt(self._account.key, password, kdf="scrypt")
        return document


def recover_signer(message: str, signature: str) -> str:
    """The address (lower case) whose key made ``signature`` over ``message``.

    EIP-191 (``personal_sign``): Keccak-256 of ``"\\x19Ethereum Signed Message:\\n" +
    len(bytes) + bytes``, then libsecp256k1's public-key recovery (coincurve) and the
    address as the last 20 bytes of the key's Keccak-256: what eth-account's
    ``recover_message`` does through eth-keys' coincurve backend, without the ~110 µs of
    Python conversions around it (half the cost of verifying a signed request). ``v`` is
    27/28 (or 0/1); eth-account's EIP-155 forms (35 and up) mean transactions, not
    messages, and are refused.
    """
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65 or raw[64] not in _RECOVERY_ID:
            raise ValueError("length or v")
        data = message.encode()
        digest = keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)
        public = PublicKey.from_signature_and_message(
            raw[:64] + bytes((_RECOVERY_ID[raw[64]],)), digest, hasher=None
        )
    except Exception:  # any malformed signature is one refusal
        raise AuthError("the signature is malformed or does not verify") from None
    return "0x" + keccak(public.format(compressed=False)[1:])[-20:].hex()


_RECOVERY_ID = {27: 0, 28: 1, 0: 0, 1: 1}  # v -> libsecp256k1's recovery id


def save_wallet(path: Path, wallet: Wallet, password: str, *, overwrite: bool = False) -> None:
    """Write the keystore with mode 0600; never replaces an existing wallet silently."""
    if path.exists() and not overwrite:
        raise WalletError(f"{path} already exists; not overwritten (a lost key is lost funds)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(wallet.keystore(password), handle)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if a wallet appeared meanwhile: never replaced
            except FileExistsError:
                raise WalletError(f"{path} already exists; not overwritten") from None
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a crash too
        finally:
            os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)


def load_wallet(path: Path, password: str) -> Wallet:
    document = _read_keystore(path)
    try:
        key = Account.decrypt(document, password)
    except ValueError:
        raise WalletError(f"wrong password for wallet {path}") from None
    return Wallet(Account.from_key(key))


def keystore_address(path: Path) -> str:
    """The wallet's address, read from the keystore without its password."""
    address = _read_keystore(path).get("address")
    if not isinstance(address, str) or not re.fullmatch(r"(0x)?[0-9a-fA-F]{40}", address):
        raise WalletError(f"{path} does not name its address")
    return "0x" + address.lower().removeprefix("0x")


def _read_keystore(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise WalletError(f"no wallet at {path}; create one with `confide wallet create`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise WalletError(f"{path} is not a wallet keystore (JSON v3)") from None
    if not isinstance(document, dict) or document.get("version") != 3:
        raise WalletError(f"{path} is not a wallet keystore (JSON v3)")
    return document
