"""``confide dapp``: trusted DApps on a CAS session (the SCONE seed, docs/scone-workflow.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.options import HubOption, OwnerOption, SmsOption, StorageOption
from confide.cli.output import JsonOption, emit_json, note, say
from confide.cli.wallet import PasswordOption, WalletOption
from confide.errors import ConfideError

app = typer.Typer(
    help="Trusted DApps: run a CAS session's service on its encrypted volumes "
    "(`confide dapp run`), after `confide session create` and `confide volume push`.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    session: Annotated[
        str, typer.Option("--session", metavar="NAME", help="The CAS session.", show_default=False)
    ],
    bundle: Annotated[
        Path,
        typer.Option(
            "--app", metavar="DIR", help="The app bundle (measured here).", show_default=False
        ),
    ],
    tee: Annotated[
        str,
        typer.Option(
            "--tee",
            metavar="sim",
            help="The TEE (sim only for now: development).",
            show_default=False,
        ),
    ],
    owner: OwnerOption = None,
    service: Annotated[
        str | None, typer.Option("--service", metavar="SVC", help="The session's service.")
    ] = None,
    volumes: Annotated[
        list[str] | None,
        typer.Option(
            "--volume",
            metavar="NAME=ENCDIR",
            help="A local encrypted copy of a volume instead of the storage's; repeat.",
        ),
    ] = None,
    push: Annotated[
        bool,
        typer.Option(
            "--push",
            help="Upload the output volumes to the storage and record their new tags in the "
            "session (without it they are only kept with --keep).",
        ),
    ] = False,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", metavar="DIR", help="Also keep the encrypted output volumes here."),
    ] = None,
    hub: HubOption = None,
    storage: StorageOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run a session's service in the (simulated) enclave: it attests, receives command,
    environment and each volume's key and expected tag, refuses a volume that is not the
    session's current version before the program starts, runs it, and seals the output
    volumes; with --push their new tags are recorded (compare-and-swap)."""
    from confide.cli.options import platform  # noqa: PLC0415
    from confide.cli.wallet import address_or_own  # noqa: PLC0415
    from confide.client.dapp import run_dapp  # noqa: PLC0415
    from confide.config import confide_home  # noqa: PLC0415

    if tee != "sim":
        raise ConfideError(f"--tee {tee}: only sim runs are built yet (docs/scone-workflow.md)")
    local = {}
    for pair in volumes or []:
        name, sep, directory = pair.partition("=")
        if not sep or not name or not directory:
            raise ConfideError(f"--volume {pair!r}: expected NAME=ENCDIR")
        local[name] = Path(directory)
    where = platform(hub, storage, sms, wallet, password, signing=True)
    done = run_dapp(
        where,
        confide_home(),
        bundle,
        owner=address_or_own(owner, wallet),
        session=session,
        service=service,
        local_volumes=local,
        push=push,
        keep=keep,
    )
    if json_out:
        emit_json(dataclasses.asdict(done))
        return
    for name, output in done.outputs.items():
        say(f"{name} {output['tag']}")
    note(
        f"ran service {done.service!r} of session {session} ({done.measurement}); "
        + ("output tags recorded" if done.pushed else "outputs not recorded (no --push)")
    )
