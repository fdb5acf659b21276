"""The requester's side: fetch a task's result or logs with the hub's grants, keep them,
verify before decrypting, extract safely.

``task show TASK --download DIR`` keeps ``DIR/<TASK>.zip`` (the stored zip, exactly as
stored) and ``DIR/<TASK>.json`` (the result document below), named with the task id
exactly as given, so that ``result verify TASK --dir DIR`` runs offline afterwards. The
document holds the order and its signature (the root of trust: its hash is the task id),
the hub's ``result`` (statement, signature, token), ``times``, ``created_at`` and, after
extraction, ``files`` (the names extracted, so the extracted files can be checked again
without the key: their salt is extracted too).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confide.errors import ConfideError
from confide.results.digest import ResultError
from confide.results.opening import open_result
from confide.results.sealed import MAX_LOGS, is_encrypted, open_logs
from confide.results.verify import Verdict, verify
from confide.sms.tasks import TaskOrder

if TYPE_CHECKING:
    from confide.client.platform import Platform

DOCUMENT_FORMAT = "confide-result-download-v1"
# The largest stored result a download takes: the runtime's plaintext tmpfs is 1 GiB, and
# an encrypted archive adds little to it.
MAX_RESULT_BLOB_BYTES = 2 << 30
MAX_LOGS_BLOB_BYTES = 1 << 20  # sealed logs: 100 kB of text and the sealing
_TASK = re.compile(r"0[xX][0-9a-fA-F]{64}")


def checked_task(task: str) -> str:
    """``task`` as given, if it is a task id (it names files: nothing else gets through)."""
    if not _TASK.fullmatch(task):
        raise ResultError(f"{task!r} is not a task id (0x and 64 hex)")
    return task


def kept_paths(directory: Path, task: str) -> tuple[Path, Path]:
    """Where a download keeps the stored zip and the result document."""
    name = checked_task(task)
    return directory / f"{name}.zip", directory / f"{name}.json"


def result_document(view: Mapping[str, Any], files: list[str] | None = None) -> dict[str, Any]:
    """What is kept next to the zip: the parts of the hub's task view verify needs."""
    return {
        "format": DOCUMENT_FORMAT,
        "task": view.get("task"),
        "status": view.get("status"),
        "cause": view.get("cause"),
        "order": view.get("order"),
        "signature": view.get("signature"),
        "created_at": view.get("created_at"),
        "times": view.get("times") or {},
        "result": view.get("result"),
        "files": files,
    }


def read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(
            f"no {path}: download the result first (confide task show TASK --download DIR)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path} is not a result document ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != DOCUMENT_FORMAT:
        raise ResultError(f"{path} is not a result document ({DOCUMENT_FORMAT})")
    return document


def order_allows_sim(view: Mapping[str, Any]) -> bool:
    """Whether the requester's own signed order asked for a simulation (tee sim and
    tolerate simulation): a download then accepts a simulated result, saying so."""
    try:
        order = TaskOrder.from_json(view.get("order"))
    except ConfideError:  # a malformed order: verify names it
        return False
    return "sim" in order.tee and "simulation" in order.tolerate


def request_grants(where: Platform, task: str) -> dict[str, Any]:
    """The hub's storage grants for the task's result and logs (signed by the requester;
    the hub refuses anyone else)."""
    answer = where.hub.task_grants(task)
    if not isinstance(answer, dict):
        raise ResultError(f"the hub answered task {task}'s grants with no JSON object")
    return dict(answer)


@dataclass
class Download:
    verdict: Verdict
    downloaded: list[Path] = field(default_factory=list)
    kept_encrypted: str | None = None  # why the result was not decrypted, when it was not


def download_result(
    where: Platform,
    task: str,
    view: Mapping[str, Any],
    directory: Path,
    *,
    key_path: Path,
    now: int,
) -> Download:
    """Fetch, keep, verify, then decrypt and extract the task's result into ``directory``.
    A result that fails verification stays encrypted (``Download.verdict`` says why)."""
    result = view.get("result")
    blob = result.get("blob") if isinstance(result, dict) else None
    if not isinstance(blob, str):
        raise ResultError(
            f"task {task} has no result to download (status {view.get('status')}"
            + (f", {view.get('cause')}" if view.get("cause") else "")
            + ")"
        )
    zip_path, json_path = kept_paths(directory, task)
    directory.mkdir(parents=True, exist_ok=True)
    grants = request_grants(where, task)
    where.storage.download(
        blob, zip_path, grant=grants.get("result"), max_bytes=MAX_RESULT_BLOB_BYTES
    )
    document = result_document(view)
    _write(json_path, document)
    key = key_path if key_path.exists() else None
    verdict = verify(
        task,
        document,
        zip_path,
        now=now,
        allow_sim=order_allows_sim(view),
        result_private_key_path=key,
    )
    outcome = Download(verdict, [zip_path, json_path])
    if not verdict.ok:
        return outcome
    if is_encrypted(zip_path) and key is None:
        outcome.kept_encrypted = f"no result key at {key_path}: kept encrypted"
        return outcome
    written = open_result(
        zip_path,
        directory,
        task_id=task,
        result_private_key_path=key,
        expected_digest=verdict.result_digest,
        keep=[zip_path.name, json_path.name],
    )
    document["files"] = sorted(p.relative_to(directory).as_posix() for p in written)
    _write(json_path, document)
    outcome.downloaded += written
    return outcome


def fetch_logs(where: Platform, task: str, view: Mapping[str, Any], key_path: Path) -> bytes:
    """The task's logs, fetched with the hub's grant and opened with the requester's key."""
    result = view.get("result")
    blob = result.get("logs_blob") if isinstance(result, dict) else None
    if not isinstance(blob, str):
        raise ResultError(
            f"task {task} has no logs (the app's owner does not let logs reach requesters, "
            f"or the task failed before its app ran)"
        )
    grants = request_grants(where, task)
    with tempfile.TemporaryDirectory(prefix="confide-logs-") as work:
        path = Path(work, "logs.sealed")
        where.storage.download(blob, path, grant=grants.get("logs"), max_bytes=MAX_LOGS_BLOB_BYTES)
        if path.stat().st_size > MAX_LOGS + 64:
            raise ResultError(f"task {task}'s logs are larger than any runtime writes")
        return open_logs(path.read_bytes(), key_path, task)


def _write(path: Path, document: Mapping[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{os.urandom(4).hex()}.part")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    partial.replace(path)
