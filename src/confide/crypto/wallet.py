"""Wallets: Ethereum keys in encrypted JSON keystores (v3), and EIP-191 signatures.

Owners, requesters and workers are wallet addresses. A wallet signs text messages with
EIP-191 (``personal_sign``), which any Ethereum tooling can check; the server recovers the
address from the signature. Signing and recovery are libsecp256k1 (coincurve) and
Keccak-256 (eth-hash) directly, and the keystore is ``confide.crypto.keystore``: the same
signatures and files as eth-account (tests compare them), without its import of py_ecc's
BLS code, which cost every signed command half a second and raised the process's
recursion limit.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from coincurve import PrivateKey, PublicKey
from eth_hash.auto import keccak

from confide.crypto.keys import Redacted
from confide.crypto.keystore import encrypt_keystore, keystore_address, unlock_keystore
from confide.errors import AuthError, WalletError

__all__ = [
    "Wallet",
    "checksum_address",
    "keystore_address",
    "load_signer",
    "load_wallet",
    "normalise_address",
    "recover_signer",
    "save_wallet",
    "wallet_from_secret",
]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_PRIVATE_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def normalise_address(text: str) -> str:
    """Addresses are accepted in any letter case and compared in lower case."""
    if not _ADDRESS.fullmatch(text.strip()):
        raise AuthError(f"{text!r} is not a wallet address (0x and 40 hex characters)")
    return text.strip().lower()


def checksum_address(address: str) -> str:
    """EIP-55 mixed-case form of an address (what keystores and wallets display)."""
    hex_address = address.lower().removeprefix("0x")
    digest = keccak(hex_address.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hex_address)
    )


def _eip191_digest(message: str) -> bytes:
    """Keccak-256 of ``"\\x19Ethereum Signed Message:\\n" + len(bytes) + bytes``."""
    data = message.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def _address_of(public: PublicKey) -> str:
    """The last 20 bytes of the Keccak-256 of the uncompressed key, lower case."""
    return "0x" + keccak(public.format(compressed=False)[1:])[-20:].hex()


class Wallet(Redacted):
    """An unlocked wallet: its address and the means to sign, never shown."""

    __slots__ = ("_address", "_key")

    def __init__(self, key: PrivateKey) -> None:
        self._key = key
        self._address = _address_of(key.public_key)

    @property
    def address(self) -> str:
        return self._address

    @classmethod
    def generate(cls) -> Wallet:
        return cls(PrivateKey())  # 32 bytes from the OS's CSPRNG, below the curve order

    @classmethod
    def from_private_key(cls, key_hex: str) -> Wallet:
        if not _PRIVATE_KEY.fullmatch(key_hex.strip()):
            raise WalletError("a private key is 64 hex characters (optionally 0x-prefixed)")
        try:
            return cls(PrivateKey(bytes.fromhex(key_hex.strip().removeprefix("0x"))))
        except ValueError:  # zero, or not below the curve order
            raise WalletError("that private key is not a valid secp256k1 key") from None

    def sign_text(self, message: str) -> str:
        """EIP-191 signature of ``message``, as 0x-prefixed hex (65 bytes, ``v`` 27/28).

        libsecp256k1 signs deterministically (RFC 6979) with a low ``s``, as eth-account
        does: the same key and message give the same signature bytes.
        """
        signature = self._key.sign_recoverable(_eip191_digest(message), hasher=None)
        return "0x" + (signature[:64] + bytes((27 + signature[64],))).hex()

    def keystore(self, password: str) -> dict[str, Any]:
        return encrypt_keystore(self._key.secret, password, checksum_address(self._address))


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
        public = PublicKey.from_signature_and_message(
            raw[:64] + bytes((_RECOVERY_ID[raw[64]],)), _eip191_digest(message), hasher=None
        )
    except Exception:  # any malformed signature is one refusal
        raise AuthError("the signature is malformed or does not verify") from None
    return _address_of(public)


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


def load_signer() -> None:
    """Load what signing needs now: eth-hash loads its Keccak backend on its first call
    (pycryptodome through cffi, 30 ms), which a command does while its scrypt runs."""
    keccak(b"")


def load_wallet(path: Path, password: str) -> Wallet:
    """Open the keystore at ``path`` (its scrypt: 0.6-0.7 s) and unlock the wallet."""
    return wallet_from_secret(path, unlock_keystore(path, password))


def wallet_from_secret(path: Path, key: bytes) -> Wallet:
    """The wallet of a private key read from the keystore at ``path``."""
    try:
        return Wallet(PrivateKey(key))
    except ValueError:
        raise WalletError(f"{path} holds no valid secp256k1 key") from None
