"""``confide app``: scaffold an app bundle and print its measurement."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.output import JsonOption, emit_json, say

app = typer.Typer(
    help="App bundles: a directory with confide-app.yml and the app's files.",
    no_args_is_help=True,
)


class Language(StrEnum):
    python = "python"
    node = "node"


Bundle = Annotated[
    Path, typer.Argument(metavar="DIR", help="The app bundle directory.", show_default=False)
]


@app.command("init")
def init(
    directory: Bundle,
    lang: Annotated[Language, typer.Option("--lang", help="The app's language.")] = Language.python,
    name: Annotated[
        str | None, typer.Option("--name", help="App name (default: the directory's name).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Create an app bundle in DIR: confide-app.yml and app.py (or app.js)."""
    from confide.bundle import init_bundle, measure_bundle  # noqa: PLC0415  (start-up time)

    written = init_bundle(directory, lang.value, name)
    measurement = measure_bundle(directory)
    if json_out:
        emit_json({"files": [str(p) for p in written], "measurement": str(measurement)})
        return
    for path in written:
        say(f"wrote {path}")
    say(f"measurement {measurement}")
    say(f"next: edit {written[1].name}, then `confide app measure {directory}`")


@app.command("measure")
def measure(directory: Bundle, json_out: JsonOption = False) -> None:
    """Print the bundle's simulation measurement (sim:<sha256>)."""
    from confide.bundle import measure_bundle  # noqa: PLC0415  (start-up time)

    measurement = measure_bundle(directory)
    if json_out:
        emit_json({"measurement": str(measurement)})
        return
    say(str(measurement))
