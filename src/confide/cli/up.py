"""``confide up``: the hub, sms and storage in one process, for development."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def up(
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="The port on 127.0.0.1.")
    ] = 8088,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            help="Workers (sim) to run for the default workerpool, signing with the operator "
            "wallet; 0: none (start your own with `confide worker start`).",
        ),
    ] = 1,
    allow_loopback_inputs: Annotated[
        bool,
        typer.Option(
            "--allow-loopback-inputs",
            hidden=True,
            help="Tests only: the workers' runtimes may fetch input files from loopback.",
        ),
    ] = False,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            metavar="DIR",
            help="Where its data lives (default: $CONFIDE_HOME, else ~/.confide); under DIR/up.",
        ),
    ] = None,
) -> None:
    """Run hub, sms and storage in one process on 127.0.0.1 (development only).

    Until ^C or SIGTERM: SQLite databases and blobs under $CONFIDE_HOME/up, simulation
    accepted (it protects nothing), a default workerpool owned by an operator wallet of
    its own, and --workers N workers running its tasks (at ^C they finish their running
    tasks first). The CLI's default hub is this one (http://127.0.0.1:8088): next, `confide
    wallet create`, then `confide app deploy DIR`."""
    from confide.config import confide_home  # noqa: PLC0415
    from confide.up.run import run  # noqa: PLC0415

    run(
        (home or confide_home()).expanduser().resolve(),
        port,
        workers,
        allow_loopback_inputs=allow_loopback_inputs,
    )
