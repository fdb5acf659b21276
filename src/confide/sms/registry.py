"""Who owns what: apps, datasets, workerpools and tasks, as the sms must know them.

The sms asks a :class:`Registry`. In the product it is a
:class:`~confide.sms.hub_registry.HubRegistry`: owner-signed records (confide.records)
that owners push to the sms and that it fetches from the hub, each verified by the sms
itself, the highest sequence kept per address. Tests fill a :class:`MemoryRegistry`.
The registry is *not* trusted to cause a release: a task's secrets are released only for
a task order its requester signed (``confide.sms.tasks``), whatever the registry says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from confide.attestation.measurement import Measurement
from confide.crypto.wallet import normalise_address
from confide.errors import ConfideError
from confide.sms.tasks import TaskRecord


class RegistryError(ConfideError):
    """A record or task the registry cannot vouch for (forged, of another kind or
    deployment, malformed); the message names it."""


class HubUnavailableError(ConfideError):
    """The hub did not answer (in time, or sensibly), and nothing the sms keeps stands
    in for its answer: HTTP 503, nothing recorded."""


@dataclass(frozen=True)
class AppRecord:
    address: str  # lower-case
    owner: str  # lower-case wallet address
    measurements: frozenset[Measurement]  # what the owner signed: the only code that may
    # receive the app developer secret (the app record names one)
    logs: bool = False  # the owner lets the app's logs reach requesters (released to the
    # enclave in the task's configuration: the worker has no say)


@dataclass(frozen=True)
class DatasetRecord:
    address: str
    owner: str
    checksum: str | None = None  # the encrypted volume's tag, as its owner signed it


@dataclass(frozen=True)
class WorkerpoolRecord:
    address: str
    owner: str
    members: frozenset[str]  # lower-case wallet addresses, the owner among them
    requesters: frozenset[str] | None = None  # who may submit to it; None: anyone

    def admits(self, requester: str) -> bool:
        return self.requesters is None or requester.lower() in self.requesters


class Registry(Protocol):
    """Each lookup may raise :class:`RegistryError` (a record that does not verify,
    named) or :class:`HubUnavailableError`."""

    def app(self, address: str) -> AppRecord | None: ...

    def dataset(self, address: str) -> DatasetRecord | None: ...

    def workerpool(self, address: str) -> WorkerpoolRecord | None: ...

    def task(self, task_id: str) -> TaskRecord | None: ...

    def is_member(self, workerpool: str, worker: str) -> bool: ...


@dataclass
class MemoryRegistry:
    """An in-process registry (unit and integration tests of the sms's own logic)."""

    apps: dict[str, AppRecord] = field(default_factory=dict)
    datasets: dict[str, DatasetRecord] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    pools: dict[str, WorkerpoolRecord] = field(default_factory=dict)

    def add_app(
        self, address: str, owner: str, *measurements: Measurement, logs: bool = False
    ) -> AppRecord:
        record = AppRecord(
            normalise_address(address), normalise_address(owner), frozenset(measurements), logs
        )
        self.apps[record.address] = record
        return record

    def add_dataset(self, address: str, owner: str, checksum: str | None = None) -> DatasetRecord:
        record = DatasetRecord(normalise_address(address), normalise_address(owner), checksum)
        self.datasets[record.address] = record
        return record

    def add_task(self, record: TaskRecord) -> None:
        self.tasks[record.task_id] = record

    def add_pool(
        self,
        address: str,
        owner: str,
        members: set[str] | frozenset[str] = frozenset(),
        requesters: set[str] | frozenset[str] | None = None,
    ) -> WorkerpoolRecord:
        owner = normalise_address(owner)
        record = WorkerpoolRecord(
            normalise_address(address),
            owner,
            frozenset({normalise_address(m) for m in members} | {owner}),
            None if requesters is None else frozenset(normalise_address(r) for r in requesters),
        )
        self.pools[record.address] = record
        return record

    def add_member(self, workerpool: str, worker: str) -> None:
        pool = self.pools.get(normalise_address(workerpool))
        if pool is None:  # a pool of its first member's (tests need no owner)
            self.add_pool(workerpool, worker)
            return
        members = pool.members | {normalise_address(worker)}
        self.pools[pool.address] = WorkerpoolRecord(
            pool.address, pool.owner, members, pool.requesters
        )

    def remove_member(self, workerpool: str, worker: str) -> None:
        pool = self.pools.get(normalise_address(workerpool))
        if pool is not None:
            members = pool.members - {normalise_address(worker)}
            self.pools[pool.address] = WorkerpoolRecord(
                pool.address, pool.owner, members, pool.requesters
            )

    def app(self, address: str) -> AppRecord | None:
        return self.apps.get(address.lower())

    def dataset(self, address: str) -> DatasetRecord | None:
        return self.datasets.get(address.lower())

    def workerpool(self, address: str) -> WorkerpoolRecord | None:
        return self.pools.get(address.lower())

    def task(self, task_id: str) -> TaskRecord | None:
        return self.tasks.get(task_id.lower())

    def is_member(self, workerpool: str, worker: str) -> bool:
        pool = self.workerpool(workerpool)
        return pool is not None and worker.lower() in pool.members
