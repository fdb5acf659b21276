"""What every task of one worker uses: its configuration and its service clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confide.client.hub import HubClient
from confide.client.storage import StorageClient
from confide.crypto.wallet import Wallet
from confide.worker.runner import Runner

RelayFactory = Callable[..., Any]  # RelayServer(sock, wallet, services, allow_loopback, on_stage)


@dataclass
class Services:
    """What every task of one worker uses."""

    hub_url: str
    deployment: str
    sms_url: str
    storage_url: str
    wallet: Wallet
    tee: str
    platform_seed: str | None  # hex (sim only): the enclave's evidence is signed with it
    work_dir: Path
    runner: Runner
    relay: RelayFactory
    allow_loopback_inputs: bool = False
    clock: Callable[[], float] = time.time
    extra: dict[str, Any] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)  # running task -> its lease token
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hub(self) -> HubClient:
        return HubClient(self.hub_url, wallet=self.wallet, clock=self.clock)

    def clients(self) -> Clients:
        """Clients for one slot's tasks, one after the other (each proves its service's
        key once, not at every task)."""
        storage = StorageClient(self.storage_url, wallet=self.wallet, clock=self.clock)
        return Clients(self.hub(), self.hub(), storage)


@dataclass
class Clients:
    hub: HubClient  # claims, records, reports (never two at once: see Progress.settle)
    beat: HubClient  # the heartbeat's thread
    storage: StorageClient

    def close(self) -> None:
        for client in (self.hub, self.beat, self.storage):
            client.close()
