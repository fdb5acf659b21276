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
from pathlib import Path
from typing import Protocol

import yaml

from confide.attestation.measurement import Measurement
from confide.crypto.wallet import normalise_address
from confide.errors import AttestationError, AuthError, ConfideError
from confide.sms.session_document import compose_yaml
from confide.sms.tasks import TaskRecord

_SECTIONS = {
    "apps": {"address", "owner", "measurements"},
    "datasets": {"address", "owner"},
    "workerpools": {"address", "members"},
}


class RegistryError(ConfideError):
    """A registry file that cannot be read; the message names the file and line."""


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
        record = AppRecord(
            normalise_address(address), normalise_address(owner), frozenset(measurements)
        )
        self.apps[record.address] = record
        return record

    def add_dataset(self, address: str, owner: str) -> DatasetRecord:
        record = DatasetRecord(normalise_address(address), normalise_address(owner))
        self.datasets[record.address] = record
        return record

    def add_task(self, record: TaskRecord) -> None:
        self.tasks[record.task_id] = record

    def remove_member(self, workerpool: str, worker: str) -> None:
        self.members.get(workerpool.lower(), set()).discard(normalise_address(worker))

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


class StaticRegistry(MemoryRegistry):
    """Apps, datasets and workerpools from a YAML file (``confide serve sms --registry``),
    the stand-in for the hub until it exists::

        apps:
          - {address: 0x…, owner: 0x…, measurements: ["sgx:<64 hex>"]}
        datasets:
          - {address: 0x…, owner: 0x…}
        workerpools:
          - {address: 0x…, members: [0x…]}

    Unknown fields, bad addresses or measurements and duplicates are refused with the
    line that holds them.
    """

    @classmethod
    def load(cls, path: Path) -> StaticRegistry:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"cannot read registry file {path}: {exc}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "registry") -> StaticRegistry:
        root = compose_yaml(text, source, RegistryError)
        registry = cls()
        if root is None:
            return registry  # an empty file: nothing registered yet
        reader = _FileReader(source)
        for section, node in reader.mapping(root, set(_SECTIONS), "the registry").items():
            seen: set[str] = set()
            for index, entry_node in enumerate(reader.sequence(node, section)):
                where = f"{section}[{index}]"
                entry = reader.mapping(entry_node, _SECTIONS[section], where)
                missing = sorted(_SECTIONS[section] - set(entry))
                if missing:
                    raise reader.fail(entry_node, f"{where}: {missing[0]!r} is missing")
                address = reader.address(entry["address"], f"{where}.address")
                if address in seen:
                    raise reader.fail(entry["address"], f"{section}: {address} is listed twice")
                seen.add(address)
                if section == "apps":
                    owner = reader.address(entry["owner"], f"{where}.owner")
                    listed = reader.sequence(entry["measurements"], f"{where}.measurements")
                    measurements = [reader.measurement(m, f"{where}.measurements") for m in listed]
                    if not measurements:
                        raise reader.fail(entry_node, f"{where}: an app needs a measurement")
                    registry.add_app(address, owner, *measurements)
                elif section == "datasets":
                    registry.add_dataset(address, reader.address(entry["owner"], f"{where}.owner"))
                else:
                    registry.members[address] = {
                        reader.address(m, f"{where}.members")
                        for m in reader.sequence(entry["members"], f"{where}.members")
                    }
        return registry


class _FileReader:
    """Walks composed YAML nodes so that every refusal names its line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node, message: str) -> RegistryError:
        return RegistryError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, allowed: set[str], where: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping")
        result: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in allowed or key in result:
                problem = "is given twice" if key in result else "is unknown"
                raise self.fail(
                    key_node,
                    f"{where}: field {key!r} {problem} (allowed: {', '.join(sorted(allowed))})",
                )
            result[key] = value_node
        return result

    def sequence(self, node: yaml.Node, where: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{where} must be a list")
        return list(node.value)

    def text(self, node: yaml.Node, where: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
            raise self.fail(node, f"{where} must be a value")
        return str(node.value)

    def address(self, node: yaml.Node, where: str) -> str:
        try:
            return normalise_address(self.text(node, where))
        except AuthError as exc:
            raise self.fail(node, f"{where}: {exc}") from None

    def measurement(self, node: yaml.Node, where: str) -> Measurement:
        try:
            return Measurement.parse(self.text(node, where))
        except AttestationError as exc:
            raise self.fail(node, f"{where}: {exc}") from None
