"""``confide dapp``: trusted DApps on a CAS session (the SCONE seed, docs/scone-workflow.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.options import (
    HubOption,
    OwnerOption,
    SmsOption,
    StorageOption,
    template_variables,
)
from confide.cli.output import JsonOption, emit_json, note, say
from confide.cli.wallet import PasswordOption, WalletOption
from confide.errors import ConfideError

app = typer.Typer(
    help="Trusted DApps (the SCONE workflow, docs/scone-workflow.md): `confide dapp push "
    "INPUTS --template T --app DIR` creates the session from the app's template and pushes "
    "the inputs; `confide dapp run --session S --app DIR --tee sim --push` runs it; "
    "`confide volume pull` decrypts the outputs.",
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


@app.command("push")
def push(
    inputs: Annotated[
        Path,
        typer.Argument(metavar="INPUTS", help="The input files (a directory).", show_default=False),
    ],
    template: Annotated[
        Path,
        typer.Option(
            "--template", metavar="FILE.yml", help="The app's session template.", show_default=False
        ),
    ],
    bundle: Annotated[
        Path,
        typer.Option(
            "--app",
            metavar="DIR",
            help="The app bundle: it must measure to one its service lists.",
            show_default=False,
        ),
    ],
    session: Annotated[
        str | None,
        typer.Option("--session", metavar="NAME", help="The session's name (sets $SESSION)."),
    ] = None,
    var: Annotated[
        list[str] | None,
        typer.Option("--var", metavar="NAME=VALUE", help="A template value; repeat."),
    ] = None,
    readers: Annotated[
        list[str] | None,
        typer.Option(
            "--reader",
            metavar="ADDR",
            help="Another wallet that may read the session (and decrypt its volumes); repeat.",
        ),
    ] = None,
    services: Annotated[
        list[str] | None,
        typer.Option("--service", metavar="SVC", help="A service of the template to accept."),
    ] = None,
    tolerate: Annotated[
        list[str] | None,
        typer.Option(
            "--tolerate", metavar="W", help="Accept a toleration of the template beyond simulation."
        ),
    ] = None,
    ignore_advisories: Annotated[
        list[str] | None,
        typer.Option("--ignore-advisory", metavar="ID", help="Accept an advisory it ignores."),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", metavar="ENCDIR", help="Also keep the encrypted input volume here."),
    ] = None,
    hub: HubOption = None,
    storage: StorageOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Step 1 of the SCONE seed in one command: create a session from the app's template
    and push INPUTS as its input volume (a new key, made here). The template is not
    trusted: its services, secrets and tolerations are shown; its access policy is
    replaced by yours (plus each --reader); a toleration beyond simulation, an ignored
    advisory or another service is refused unless repeated on the command line. Prints
    the `confide dapp run` command to run next."""
    from confide.cli.options import platform  # noqa: PLC0415
    from confide.cli.wallet import address_or_own  # noqa: PLC0415
    from confide.client.dapp_template import describe, session_from_template  # noqa: PLC0415
    from confide.client.volumes import push_volume  # noqa: PLC0415
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415

    variables = template_variables(var)
    if session is not None:
        variables["SESSION"] = session
    try:
        text = template.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfideError(f"cannot read the template {template}: {exc}") from None
    owner = normalise_address(address_or_own(None, wallet))
    made = session_from_template(
        text,
        variables,
        str(template),
        owner=owner,
        services=services or (),
        readers=[normalise_address(r) for r in readers or []],
        tolerate=tolerate or (),
        ignore_advisories=ignore_advisories or (),
        bundle=bundle,
    )
    if session is not None and made.document.name != session:
        raise ConfideError(
            f"the template names its session {made.document.name!r} itself: --session "
            f"{session} cannot rename it (its name is $SESSION in a template that can)"
        )
    for line in describe(made):  # on stderr, with --json too
        note(line)
    where = platform(hub, storage, sms, wallet, password, signing=True)
    where.sms.create_session(made.text, {}, str(template))
    name = made.document.name
    pushed = push_volume(
        where, inputs, owner=owner, session=name, volume=made.input_volume, keep=keep
    )
    command = ["confide", "dapp", "run", "--session", name, "--app", str(bundle), "--tee", "sim"]
    command.append("--push")
    if json_out:
        emit_json(
            {
                "session": name,
                "owner": owner,
                "volumes": {made.input_volume: {"tag": pushed.tag, "blob": pushed.blob}},
                "run": command,
            }
        )
        return
    note(f"session {name} created; volume {made.input_volume!r} pushed, tag {pushed.tag}")
    say(" ".join(command))
