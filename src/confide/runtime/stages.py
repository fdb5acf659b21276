"""What the runtime reports: the stage it reached, how a task failed, report.json.

A failure is a :class:`TaskFailure` with one of DESIGN.md's causes and a human reason;
its text is redacted of every released secret value before it is written anywhere.
``report.json`` is the runtime's whole answer to the worker::

    {"status", "cause", "error", "result_file", "logs_file", "statement", "signature",
     "token", "stages": {STAGE: unix seconds entered}, "timings": {name: seconds}}

The worker publishes ``error`` and ``timings`` at the hub, where anyone reads them, so
neither may carry what an app chooses (a covert channel around the app's no-network
sandbox): ``error`` is fixed runtime text for the cause (:func:`public_error`), and the
timings are rounded to 10 ms. The detailed reason (which may name the app's paths, files
or exit status) goes only into ``error.txt``, inside the result encrypted to the
requester. A failure before the ATTESTING stage (or of the attestation itself) released
nothing and ran no app code: its reason is the runtime's (or the sms's) and is shown in
full, there being no error.txt to carry it.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confide.errors import ConfideError
from confide.relay.client import RelayChannel
from confide.relay.protocol import RelayError

PRE_COMPUTE_FAILED = "PRE_COMPUTE_FAILED"
ATTESTATION_FAILED = "ATTESTATION_FAILED"
APP_COMPUTE_FAILED = "APP_COMPUTE_FAILED"
APP_COMPUTE_TIMEOUT = "APP_COMPUTE_TIMEOUT"
POST_COMPUTE_FAILED = "POST_COMPUTE_FAILED"
CAUSES = (
    PRE_COMPUTE_FAILED,
    ATTESTATION_FAILED,
    APP_COMPUTE_FAILED,
    APP_COMPUTE_TIMEOUT,
    POST_COMPUTE_FAILED,
)
REPORT_FILE = "report.json"
RESULT_FILE = "result.zip"
LOGS_FILE = "logs.sealed"
ERROR_FILE = "error.txt"
MAX_ERROR_CHARS = 2000
TIMING_DIGITS = 2  # published timings are rounded to 10 ms
_PUBLIC = {
    PRE_COMPUTE_FAILED: "pre-compute failed",
    ATTESTATION_FAILED: "the attestation failed",
    APP_COMPUTE_FAILED: "the app failed",
    APP_COMPUTE_TIMEOUT: "the app ran past the task's deadline and was stopped",
    POST_COMPUTE_FAILED: "post-compute failed (computed.json or the result in IEXEC_OUT)",
}
SEE_ERROR_TXT = "the reason is in error.txt, in the result sealed to the requester"


class TaskFailure(ConfideError):  # noqa: N818 (a task outcome, not a programming error)
    """The task fails with ``cause``; the message says why (redacted before it is shown)."""

    def __init__(self, cause: str, message: str) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}")
        super().__init__(message)
        self.cause = cause


class Redactor:
    """Replaces every released secret value (and the dataset key) in text and bytes.

    Redaction is by exact value: it hides a value printed as it is, not one transformed
    (reversed, encoded, split, computed from) by an app that means to show it, and an app
    that echoes what its requester sends shows whether a guess equals a value (the mark).
    A cut output (the last 100 kB) begins with its first whole line, and never before the
    longest value's length, so no value's end is ever kept alone (nothing to match a
    suffix against, one character at a time)."""

    MARK = b"[redacted]"

    def __init__(self, values: list[bytes] | None = None) -> None:
        self._values: list[bytes] = []
        for value in values or []:
            self.add(value)

    def add(self, value: bytes) -> None:
        if value and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def bytes(self, data: bytes, *, cut: bool = False) -> bytes:
        """``data`` with each value replaced; ``cut``: ``data`` is the tail of a longer
        output, so its beginning goes first, whatever it holds (:meth:`cut_start`)."""
        if cut:
            data = data[self.cut_start(data) :]
        for value in self._values:
            data = data.replace(value, self.MARK)
        return data

    def cut_start(self, data: builtins.bytes) -> int:
        """Where a cut tail is kept from: the first line start at or past the longest
        value's length (or that length when no line starts there). Unconditional: a value
        that began before the cut ends before it, whatever the tail holds."""
        longest = len(self._values[0]) if self._values else 0
        newline = data.find(b"\n", max(longest - 1, 0))
        return newline + 1 if newline >= 0 else min(longest, len(data))

    def text(self, text: str) -> str:
        return self.bytes(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )


@dataclass
class Progress:
    """The stages entered (unix seconds) and how long each part took; tells the worker
    of each stage through the relay while it is open."""

    channel: RelayChannel | None
    stages: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def enter(self, stage: str) -> None:
        self.stages[stage] = round(time.time(), TIMING_DIGITS)
        if self.channel is not None and not self.channel.closed:
            # The worker may have lost the hub for a moment: the task goes on.
            with contextlib.suppress(RelayError):
                self.channel.stage(stage)

    def start(self, name: str) -> None:
        self._started[name] = time.monotonic()

    def stop(self, name: str) -> None:
        began = self._started.pop(name, None)
        if began is not None:
            self.timings[name] = round(time.monotonic() - began, TIMING_DIGITS)


@dataclass
class Outcome:
    """What report.json says; filled as the task goes. ``error`` is the detailed reason
    (redacted) that error.txt carries; report.json shows :func:`public_error` instead.
    ``logs_digest``: the SHA-256 of the sealed logs written (signed in the statement)."""

    status: str = "FAILED"
    cause: str | None = None
    error: str | None = None
    result_file: str | None = None
    logs_file: str | None = None
    statement: dict[str, Any] | None = None
    signature: str | None = None
    token: str | None = None
    logs_digest: str = ""

    def fail(self, failure: TaskFailure, redactor: Redactor) -> None:
        self.status, self.cause = "FAILED", failure.cause
        self.error = redactor.text(str(failure))[:MAX_ERROR_CHARS]


def public_error(outcome: Outcome, progress: Progress) -> str | None:
    """What report.json (so the hub, publicly) says of a failure: the runtime's fixed
    text for its cause; the detailed reason too only when nothing was released and no app
    code ran (before ATTESTING, or the attestation itself failing), else a pointer to
    error.txt."""
    if outcome.cause is None:
        return None
    fixed = _PUBLIC.get(outcome.cause, "the task failed")
    before_release = "ATTESTING" not in progress.stages or (
        outcome.cause == ATTESTATION_FAILED and "COMPUTING" not in progress.stages
    )
    if before_release and outcome.error:
        return f"{fixed}: {outcome.error}"[:MAX_ERROR_CHARS]
    if outcome.statement is not None:
        return f"{fixed}; {SEE_ERROR_TXT}"
    return fixed


def write_report(out: Path, outcome: Outcome, progress: Progress) -> None:
    """``out/report.json``, complete or not at all (written aside, then renamed)."""
    document = {
        "status": outcome.status,
        "cause": outcome.cause,
        "error": public_error(outcome, progress),
        "result_file": outcome.result_file,
        "logs_file": outcome.logs_file,
        "statement": outcome.statement,
        "signature": outcome.signature,
        "token": outcome.token,
        "stages": dict(progress.stages),
        "timings": dict(progress.timings),
    }
    write_out(out, REPORT_FILE, (json.dumps(document, indent=2) + "\n").encode())


def write_out(out: Path, name: str, data: bytes | Path) -> None:
    """Put ``data`` (bytes, or a file's bytes) at ``out/name``, whole or not at all. The
    worker made ``out`` and may have planted links in it: what stands at the partial
    name is removed first (a link is removed, never followed), the partial file is
    created new (``O_EXCL``, ``O_NOFOLLOW``), then renamed over ``name``."""
    partial = out / f".{name}.partial"
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(partial, flags, 0o644), "wb") as handle:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            with data.open("rb") as source:
                while piece := source.read(1 << 20):
                    handle.write(piece)
    os.replace(partial, out / name)
