"""The records this user signed, remembered locally (``$CONFIDE_HOME/records/``).

The hub keeps records, but it is untrusted: it cannot forge one of ours, yet it could
serve an older version we signed (an app's older measurement) when we fetch our own record
back, say to push a secret for its measurement. Each record the CLI deploys is kept here
too, and a record fetched back is refused when it is older than the one kept.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from confide.records import RecordError, SignedRecord
from confide.sms.tasks import TaskOrder, TaskOrderError

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")


def remember(directory: Path, signed: SignedRecord) -> None:
    """Keep ``signed`` unless a higher sequence of its address is kept already."""
    kept = recall(directory, signed.address)
    if kept is not None and kept.record.sequence >= signed.record.sequence:
        return
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{signed.address}.json"
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}")
    tmp.write_text(json.dumps(signed.to_json(), sort_keys=True) + "\n")
    tmp.replace(path)


def recall(directory: Path, address: str) -> SignedRecord | None:
    if not _ADDRESS.fullmatch(address):
        return None
    path = directory / f"{address}.json"
    try:
        return SignedRecord.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecordError):
        return None  # an unreadable copy protects nothing: the hub's is checked as usual


def check_not_older(directory: Path, fetched: SignedRecord) -> None:
    """RecordError when ``fetched`` is older than the version of it we signed last."""
    kept = recall(directory, fetched.address)
    if kept is not None and fetched.record.sequence < kept.record.sequence:
        raise RecordError(
            f"the hub serves {fetched.record.kind} {fetched.address} at sequence "
            f"{fetched.record.sequence}, older than the one you signed last "
            f"({kept.record.sequence}, kept in {directory}): refusing a replayed record"
        )


_TASK = re.compile(r"0x[0-9a-f]{64}")


def remember_order(directory: Path, order: TaskOrder, signature: str) -> None:
    """Keep the order this user signed (``directory/<task>.json``), so that a cancel
    reaches the sms even when the hub withholds the order."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{order.task_id()}.json"
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}")
    tmp.write_text(json.dumps({"order": order.to_json(), "signature": signature}) + "\n")
    tmp.replace(path)


def recall_order(directory: Path, task_id: str) -> tuple[TaskOrder, str] | None:
    """The order kept for ``task_id`` and its signature, if one that derives to it is kept."""
    if not _TASK.fullmatch(task_id):
        return None
    try:
        document = json.loads((directory / f"{task_id}.json").read_text())
        order = TaskOrder.from_json(document["order"])
        signature = str(document["signature"])
    except (OSError, ValueError, KeyError, TypeError, TaskOrderError):
        return None
    return (order, signature) if order.task_id() == task_id else None
