"""One hub URL, and the storage and the sms a client uses with it.

Clients find the storage from the hub's ``/v1/info`` unless told otherwise. The sms is
another matter: it is where secrets, result keys and task cancels go, and a task order
pins its key, so **the hub never chooses it**. The sms is, in this order:

1. the one named by ``--sms`` / ``CONFIDE_SMS`` (pinned on first contact, its key's
   fingerprint shown);
2. the loopback sms of ``confide up``, when the hub is on this machine and says it is
   embedded (and names an sms on this machine too);
3. the sms the hub names, only if the user trusted it before (``confide sms trust URL
   --fingerprint HEX``, or a pin from an earlier ``--sms``).

A hub naming an sms the user has not trusted is refused, saying how to trust one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confide.client.hub import HubClient
from confide.client.pins import is_loopback_url
from confide.client.sms import SmsClient
from confide.client.storage import StorageClient
from confide.crypto.wallet import Wallet
from confide.errors import AuthError, ConfideError

PinNotice = Callable[[str, str], None]


def untrusted_sms_message(hub: str, sms: str) -> str:
    return (
        f"the hub at {hub} names the sms {sms}, which you have not trusted (a hub never "
        f"chooses where your secrets go): ask its operator for its key's fingerprint "
        f"(`confide serve sms` prints it at start), then run `confide sms trust {sms} "
        f"--fingerprint HEX`, or name an sms with --sms URL / CONFIDE_SMS"
    )


@dataclass
class Platform:
    """The hub, and lazily the storage and the sms that go with it."""

    hub_url: str
    wallet: Wallet | Callable[[], Wallet] | None = None
    trust_dir: Path | None = None
    storage_url: str | None = None  # --storage / CONFIDE_STORAGE
    sms_url: str | None = None  # --sms / CONFIDE_SMS
    on_pin: PinNotice | None = None
    clock: Callable[[], float] = time.time
    _hub: HubClient | None = field(default=None, init=False, repr=False)
    _sms: SmsClient | None = field(default=None, init=False, repr=False)
    _storage: StorageClient | None = field(default=None, init=False, repr=False)

    @property
    def records_dir(self) -> Path | None:
        """Where the records this user signed are kept (confide.client.known)."""
        return None if self.trust_dir is None else self.trust_dir.parent / "records"

    def signer(self) -> Wallet:
        """The wallet that signs (awaited once, when it is still being unlocked)."""
        if callable(self.wallet):
            self.wallet = self.wallet()
        if self.wallet is None:
            raise AuthError("this command signs with your wallet: none was given")
        return self.wallet

    @property
    def hub(self) -> HubClient:
        if self._hub is None:
            self._hub = HubClient(self.hub_url, wallet=self.wallet, clock=self.clock)
        return self._hub

    def hub_info(self) -> dict[str, Any]:
        return self.hub.info()

    def embedded(self) -> bool:
        """The hub is a ``confide up`` on this machine (simulation allowed there)."""
        return is_loopback_url(self.hub.base_url) and self.hub_info().get("embedded") is True

    @property
    def storage(self) -> StorageClient:
        if self._storage is None:
            url = self.storage_url or self.hub_info().get("storage")
            if not isinstance(url, str) or not url:
                raise ConfideError(
                    f"the hub at {self.hub.base_url} names no storage: pass --storage URL "
                    f"(or set CONFIDE_STORAGE)"
                )
            self._storage = StorageClient(url, wallet=self.wallet, clock=self.clock)
        return self._storage

    @property
    def sms(self) -> SmsClient:
        if self._sms is None:
            self._sms = SmsClient(
                self.sms_url or self._trusted_sms_of_hub(),
                wallet=self.wallet,
                trust_dir=self.trust_dir,
                clock=self.clock,
                on_pin=self.on_pin,
            )
        return self._sms

    def _trusted_sms_of_hub(self) -> str:
        try:
            info = self.hub_info()
        except ConfideError as exc:
            if isinstance(exc, AuthError):
                raise
            raise ConfideError(
                f"{exc}; or name the sms directly with --sms URL (or CONFIDE_SMS)"
            ) from None
        named = info.get("sms")
        if not isinstance(named, str) or not named:
            raise ConfideError(
                f"the hub at {self.hub.base_url} names no sms: name one with --sms URL "
                f"(or CONFIDE_SMS)"
            )
        if self.embedded() and is_loopback_url(named):
            return named  # `confide up` on this machine: its own sms, pinned on first use
        probe = SmsClient(named, trust_dir=self.trust_dir)
        path = probe.pin_path()
        probe.close()
        if path is None or not path.exists():
            raise AuthError(untrusted_sms_message(self.hub.base_url, named))
        return named
