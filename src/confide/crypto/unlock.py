"""Unlocking a wallet in the background, so a command's start-up overlaps its scrypt.

Opening a keystore is 0.6-0.7 s of scrypt (``confide.crypto.keystore``), which releases
the GIL. A signed command starts it first, from this module (which imports nothing
heavy, so the thread starts before the signer's libraries load), then imports its HTTP
client and the signer meanwhile instead of one after the other. The thread only derives
and decrypts (``confide.crypto.keystore``); the wallet object is made by ``wait()``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from confide.crypto.keys import Redacted
from confide.crypto.keystore import unlock_keystore
from confide.errors import WalletError

if TYPE_CHECKING:
    from confide.crypto.wallet import Wallet


class PendingWallet(Redacted):
    """A wallet being unlocked on another thread; ``wait()`` returns it or raises."""

    __slots__ = ("_error", "_key", "_path", "_thread")

    def __init__(self, path: Path, password: str) -> None:
        self._path = path
        self._key: bytes | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(path, password), name="wallet-unlock", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path, password: str) -> None:
        try:
            self._key = unlock_keystore(path, password)
        except BaseException as exc:  # handed to the caller by wait()
            self._error = exc

    def wait(self) -> Wallet:
        from confide.crypto.wallet import load_signer, wallet_from_secret  # noqa: PLC0415

        load_signer()  # while scrypt runs
        self._thread.join()
        if self._key is None:
            raise self._error or WalletError("the wallet was not unlocked")
        return wallet_from_secret(self._path, self._key)


def unlock_wallet(path: Path, password: str) -> PendingWallet:
    """Start unlocking the wallet at ``path`` in the background."""
    return PendingWallet(path, password)
