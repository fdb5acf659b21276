"""What the runtime reports: the stage it reached, how a task failed, report.json.

A failure is a :class:`TaskFailure` with one of DESIGN.md's causes and a human reason;
its text is redacted of every released secret value before it is written anywhere
(report.json, error.txt). ``report.json`` is the runtime's whole answer to the worker::

    {"status", "cause", "error", "result_file", "logs_file", "statement", "signature",
     "token", "stages": {STAGE: unix seconds entered}, "timings": {name: seconds}}
"""

from __future__ import annotations

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


class TaskFailure(ConfideError):  # noqa: N818 (a task outcome, not a programming error)
    """The task fails with ``cause``; the message says why (redacted before it is shown)."""

    def __init__(self, cause: str, message: str) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}")
        super().__init__(message)
        self.cause = cause


class Redactor:
    """Replaces every released secret value (and the dataset key) in text and bytes."""

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
        output, so a value's end at its very start (the value cut in two) goes too."""
        for value in self._values:
            data = data.replace(value, self.MARK)
        if cut:
            for value in self._values:
                for size in range(len(value) - 1, 0, -1):
                    if data.startswith(value[-size:]):
                        data = self.MARK + data[size:]
                        break
        return data

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
        self.stages[stage] = round(time.time(), 3)
        if self.channel is not None and not self.channel.closed:
            # The worker may have lost the hub for a moment: the task goes on.
            with contextlib.suppress(RelayError):
                self.channel.stage(stage)

    def start(self, name: str) -> None:
        self._started[name] = time.monotonic()

    def stop(self, name: str) -> None:
        began = self._started.pop(name, None)
        if began is not None:
            self.timings[name] = round(time.monotonic() - began, 6)


@dataclass
class Outcome:
    """What report.json says; filled as the task goes."""

    status: str = "FAILED"
    cause: str | None = None
    error: str | None = None
    result_file: str | None = None
    logs_file: str | None = None
    statement: dict[str, Any] | None = None
    signature: str | None = None
    token: str | None = None

    def fail(self, failure: TaskFailure, redactor: Redactor) -> None:
        self.status, self.cause = "FAILED", failure.cause
        self.error = redactor.text(str(failure))[:MAX_ERROR_CHARS]


def write_report(out: Path, outcome: Outcome, progress: Progress) -> None:
    """``out/report.json``, complete or not at all (written aside, then renamed)."""
    document = {
        "status": outcome.status,
        "cause": outcome.cause,
        "error": outcome.error,
        "result_file": outcome.result_file,
        "logs_file": outcome.logs_file,
        "statement": outcome.statement,
        "signature": outcome.signature,
        "token": outcome.token,
        "stages": dict(progress.stages),
        "timings": dict(progress.timings),
    }
    partial = out / f".{REPORT_FILE}.partial"
    partial.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(partial, out / REPORT_FILE)
