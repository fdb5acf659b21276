"""Unlocking a wallet in the background, so a command's start-up overlaps its scrypt.

Opening a keystore is 0.6-0.7 s of scrypt (``confide.crypto.keystore``), which releases
the GIL. A signed command starts it first, from this module (which imports nothing
heavy, so the thread starts before the signer's libraries load), then imports its HTTP
client and the signer meanwhile instead of one after the other.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from confide.errors import WalletError

if TYPE_CHECKING:
    from confide.crypto.wallet import Wallet


class PendingWallet:
    """A wallet being unlocked on another thread; ``wait()`` returns it or raises."""

    __slots__ = ("_error", "_thread", "_wallet")

    def __init__(self, path: Path, password: str) -> None:
        self._wallet: Wallet | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(path, password), name="wallet-unlock", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path, password: str) -> None:
        try:
            from confide.crypto.wallet import load_wallet  # noqa: PLC0415  (on this thread)

            self._wallet = load_wallet(path, password)
        except BaseException as exc:  # handed to the caller by wait()
            self._error = exc

    def wait(self) -> Wallet:
        self._thread.join()
        if self._wallet is None:
            raise self._error or WalletError("the wallet was not unlocked")
        return self._wallet


def unlock_wallet(path: Path, password: str) -> PendingWallet:
    """Start unlocking the wallet at ``path`` in the background."""
    return PendingWallet(path, password)
