"""How every command talks to its user.

Human output goes to stdout; with ``--json`` stdout holds exactly one JSON document and
everything else (progress, warnings) goes to stderr. A progress bar is drawn only on a
terminal and never in JSON mode.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")
]


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, sort_keys=True) + "\n")


def say(text: str) -> None:
    """A line of the command's result, on stdout."""
    sys.stdout.write(text + "\n")


def note(text: str) -> None:
    """A remark that is not the result (progress, where things went), on stderr."""
    sys.stderr.write(text + "\n")


def warn(text: str) -> None:
    sys.stderr.write(f"warning: {text}\n")


@contextmanager
def progress_bar(
    description: str, total: Callable[[], int], enabled: bool
) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callback; draws a bar on stderr when it is a terminal.

    ``total`` is called only when a bar is drawn, so sizing the work costs nothing
    otherwise.
    """
    size = total() if enabled and sys.stderr.isatty() else 0
    if size <= 0:
        yield lambda _n: None
        return
    # rich is imported only when a bar is drawn: it costs start-up time otherwise.
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(
        f"[bold]{description}", *columns, console=Console(stderr=True), transient=True
    ) as bar:
        task = bar.add_task(description, total=size)
        yield lambda n: bar.advance(task, n)
