"""The result document a worker reports with a final status, and the requester's grants.

A worker that finishes a task (COMPLETED, or FAILED after the enclave wrote an
``error.txt``) reports where the runtime's output went and what the enclave signed:
``{"blob", "logs_blob", "statement", "signature", "token", "error"}``, every field
optional (null), and optionally ``"timings"``: how long each step took by the worker's
and the runtime's clocks (``{name: seconds}``, diagnostic only, never verified). The hub
keeps it as JSON with the task and serves it in the task's view; it checks only its
shape and size: the statement, its signature and the token are the enclave's and the
sms's, checked offline by ``confide result verify`` (the hub is untrusted). The
requester reads the blobs from the storage with grants the hub signs for them
(``POST /v1/tasks/{task}/grants``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from confide.errors import TaskError

MAX_RESULT_CHARS = 32 * 1024  # the whole document, as compact JSON
MAX_ERROR_CHARS = 4096
MAX_TOKEN_CHARS = 16 * 1024
MAX_SIGNATURE_CHARS = 256
FIELDS = ("blob", "logs_blob", "statement", "signature", "token", "error")
# Set by the hub, never taken from the report: the worker that reported (and uploaded)
# the blobs; the requester's grants vouch for it only.
UPLOADER = "uploader"
TIMINGS = "timings"  # optional, kept only when given: {name: seconds}, diagnostic only
MAX_TIMINGS = 16
MAX_TIMING_SECONDS = 86400
_TIMING_NAME = re.compile(r"[a-z_]{1,32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(0x)?[0-9a-fA-F]{2,256}")
_TOKEN = re.compile(r"[A-Za-z0-9_\-=.]+")


def check_result(document: Any) -> dict[str, Any]:
    """``document`` as the hub keeps it (every field present, null when absent), or
    TaskError naming what is wrong with it."""
    if not isinstance(document, dict):
        raise TaskError("result is a JSON object")
    unknown = set(document) - {*FIELDS, TIMINGS}
    if unknown:
        raise TaskError(
            f"result has unknown fields {sorted(unknown)}: only {', '.join(FIELDS)}, {TIMINGS}"
        )
    kept = {name: document.get(name) for name in FIELDS}
    if document.get(TIMINGS) is not None:
        kept[TIMINGS] = _timings(document[TIMINGS])
    for name in ("blob", "logs_blob"):
        value = kept[name]
        if value is not None and not (isinstance(value, str) and _HEX64.fullmatch(value)):
            raise TaskError(f"result.{name} is a blob digest (64 lower-case hex) or null")
    statement = kept["statement"]
    if statement is not None and not isinstance(statement, dict):
        raise TaskError("result.statement is a JSON object or null")
    _text(kept, "signature", MAX_SIGNATURE_CHARS, _HEX)
    _text(kept, "token", MAX_TOKEN_CHARS, _TOKEN)
    _text(kept, "error", MAX_ERROR_CHARS, None)
    if len(json.dumps(kept, separators=(",", ":"))) > MAX_RESULT_CHARS:
        raise TaskError(f"result is larger than {MAX_RESULT_CHARS} characters of JSON")
    return kept


def _timings(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_TIMINGS:
        raise TaskError(f"result.timings is an object of at most {MAX_TIMINGS} entries")
    for name, seconds in value.items():
        if not _TIMING_NAME.fullmatch(name) or isinstance(seconds, bool):
            raise TaskError("result.timings names are 1 to 32 of a-z and _, with seconds")
        if not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_TIMING_SECONDS:
            raise TaskError(f"result.timings.{name} is from 0 to {MAX_TIMING_SECONDS} seconds")
    return {name: float(seconds) for name, seconds in value.items()}


def _text(kept: dict[str, Any], name: str, limit: int, shape: re.Pattern[str] | None) -> None:
    value = kept[name]
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit:
        raise TaskError(f"result.{name} is a string of at most {limit} characters, or null")
    if shape is not None and not shape.fullmatch(value):
        raise TaskError(f"result.{name} is malformed")
    if name == "error" and "\x00" in value:
        raise TaskError("result.error holds a NUL character")


def result_blobs(result: dict[str, Any] | None) -> dict[str, str | None]:
    """The digests a requester may be granted: ``{"result", "logs"}`` (None: none)."""
    if result is None:
        return {"result": None, "logs": None}
    return {"result": result.get("blob"), "logs": result.get("logs_blob")}
