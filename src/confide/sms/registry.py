"""Who owns what: apps, datasets, workerpools and tasks, as the sms must know them.

The hub (a later issue) is the authority for these; the sms asks it through
:class:`Registry`. Until the hub exists, a deployment describes them in a YAML file
(:class:`StaticRegistry`, ``confide serve sms --registry FILE``) and tests fill a
:class:`MemoryRegistry`. The registry is *not* trusted to cause a release: a task's
secrets are released only for a task order its requester signed (``confide.sms.tasks``),
whatever the registry says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from confide.attestation.measurement import Measurement
from confide.crypto.wallet import normalise_address
from confide.sms.tasks import TaskRecord


@dataclass(frozen=True)
class AppRecord:
    address: str  # lower-case
    owner: str  # lower-case wallet address
    measurements: frozenset[Measurement]  # what the owner registered: the only code that may
    # receive the app developer secret


@dataclass(frozen=True)
class DatasetRecord:
    address: str
    owner: str


class Registry(Protocol):
    def app(self, address: str) -> AppRecord | None: ...

    def dataset(self, address: str) -> DatasetRecord | None: ...

    def task(self, task_id: str) -> TaskRecord | None: ...

    def is_member(self, workerpool: str, worker: str) -> bool: ...


@dataclass
class MemoryRegistry:
    """An in-process registry (tests, and the static file's loaded form)."""

    apps: dict[str, AppRecord] = field(default_factory=dict)
    datasets: dict[str, DatasetRecord] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)

    def add_app(self, address: str, owner: str, *measurements: Measurement) -> AppRecord:
        record = AppRecord(normalise_address(address), normalise_address(owner),
                           frozenset(measurements))  # fmt: skip
        self.apps[record.address] = record
        return record

    def add_dataset(self, address: str, owner: str) -> DatasetRecord:
        record = DatasetRecord(normalise_address(address), normalise_address(owner))
        self.datasets[record.address] = record
        return record

    def add_task(self, record: TaskRecord) -> None:
        self.tasks[record.task_id] = record

    def add_member(self, workerpool: str, worker: str) -> None:
        pool = normalise_address(workerpool)
        self.members.setdefault(pool, set()).add(normalise_address(worker))

    def app(self, address: str) -> AppRecord | None:
        return self.apps.get(address.lower())

    def dataset(self, address: str) -> DatasetRecord | None:
        return self.datasets.get(address.lower())

    def task(self, task_id: str) -> TaskRecord | None:
        return self.tasks.get(task_id.lower())

    def is_member(self, workerpool: str, worker: str) -> bool:
        return worker.lower() in self.members.get(workerpool.lower(), set())
