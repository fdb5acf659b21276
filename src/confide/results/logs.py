"""The requester's side of a task's logs: opened only once the enclave vouches for them.

Anyone can seal a text to the requester's public result key for a task, so a sealed logs
blob proves nothing by itself. The enclave signs the SHA-256 of the sealed logs it wrote
(the statement's ``logs_digest``); :func:`verified_logs` checks, in this order, the sms's
token, the statement's signature, binding and outcome (:func:`verify_statement`), that
the hub names the signed blob, and the downloaded bytes' digest, and only then opens
them. The text is the app's own output (secret values redacted): whoever prints it strips
terminal control characters (``confide task debug --logs`` does).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confide.results.digest import ResultError
from confide.results.fetch import order_allows_sim, request_grants, result_document
from confide.results.sealed import MAX_LOGS, open_logs
from confide.results.verify import verify_statement

if TYPE_CHECKING:
    from confide.client.platform import Platform

_SEALED_OVERHEAD = 64  # HPKE's encapsulated key and tag, with room to spare
_HEX64 = re.compile(r"[0-9a-f]{64}")


def signed_logs_digest(task: str, view: Mapping[str, Any], *, now: int) -> str:
    """The logs digest the enclave signed for ``task`` (its hub ``view``), once the
    token, statement and outcome verify; ResultError naming the check otherwise, or
    saying the task has no logs."""
    result = view.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("logs_blob"), str):
        raise ResultError(
            f"task {task} has no logs (the app's owner does not let logs reach requesters, "
            f"or the task failed before its app ran)"
        )
    verdict, statement = verify_statement(
        task, result_document(view), now=now, allow_sim=order_allows_sim(view)
    )
    if statement is None:
        raise ResultError(
            f"task {task}'s result statement does not verify ({verdict.reason()}): its logs "
            f"are not opened"
        )
    if not statement.logs_digest:
        raise ResultError(f"the enclave signed no logs for task {task}: none are opened")
    if result["logs_blob"] != statement.logs_digest:
        named = result["logs_blob"]
        shown = named if _HEX64.fullmatch(named) else repr(named[:80])  # the hub's text
        raise ResultError(
            f"the hub names logs blob {shown}, the enclave signed {statement.logs_digest}: "
            f"not opened"
        )
    return statement.logs_digest


def verified_logs(
    where: Platform, task: str, view: Mapping[str, Any], key_path: Path, *, now: int
) -> bytes:
    """The task's logs: verified (:func:`signed_logs_digest`), fetched with the hub's
    grant, their digest checked, then opened with the requester's result key."""
    digest = signed_logs_digest(task, view, now=now)
    grants = request_grants(where, task)
    with tempfile.TemporaryDirectory(prefix="confide-logs-") as work:
        path = Path(work, "logs.sealed")
        where.storage.download(digest, path, grant=grants.get("logs"))
        sealed = path.read_bytes()
    return open_checked(sealed, digest, key_path, task)


def open_checked(sealed: bytes, digest: str, key_path: Path, task: str) -> bytes:
    """``sealed`` opened, when its SHA-256 is ``digest`` (the signed one)."""
    if len(sealed) > MAX_LOGS + _SEALED_OVERHEAD:
        raise ResultError(f"task {task}'s logs are larger than any runtime writes")
    actual = hashlib.sha256(sealed).hexdigest()
    if actual != digest:
        raise ResultError(
            f"task {task}'s logs have SHA-256 {actual}, the enclave signed {digest}: not opened"
        )
    return open_logs(sealed, key_path, task)
