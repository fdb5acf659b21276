"""Entry point: builds the command tree and turns every refusal into ``error: …``."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated

import typer

from confide import __version__
from confide.errors import ConfideError

HELP = (
    "confide: confidential computing without leaking secrets.\n\n"
    'See it work first: `confide demo` runs the iExec tutorial "Access requester '
    'secrets" end to end on a private platform. Then start a development platform with '
    "`confide up` (hub, sms, storage and a worker on 127.0.0.1:8088), make a wallet with "
    "`confide wallet create`, deploy apps, datasets and workerpools, push secrets and run "
    "tasks (`confide app deploy`, `confide app run --watch`, `confide task show "
    "--download`). Also: encrypted volumes whose tag catches tampering and rollback, CAS "
    "sessions, attestation quotes, and each service alone (`confide serve hub|sms|"
    "storage`, `confide worker start`). Run `confide COMMAND --help` for the options of a "
    "command."
)
# (command, module, typer app in it). Only the group a command line names is imported:
# a signed `requester push-secret` then skips the volume engine, the attestation
# verifiers and the database layer (start-up time is most of a short command's time;
# docs/benchmarks.md). A command line naming no known group imports them all, so the
# top-level help lists every command and a mistyped one is answered as before.
GROUPS = (
    ("volume", "confide.cli.volume", "app"),
    ("app", "confide.cli.app", "app"),
    ("attestation", "confide.cli.attestation", "app"),
    ("wallet", "confide.cli.wallet", "app"),
    ("requester", "confide.cli.sms", "requester_app"),
    ("dataset", "confide.cli.dataset", "app"),
    ("workerpool", "confide.cli.workerpool", "app"),
    ("task", "confide.cli.task", "app"),
    ("sms", "confide.cli.trust", "app"),
    ("result", "confide.cli.result", "app"),
    ("serve", "confide.cli.sms", "serve_app"),
    ("session", "confide.cli.session", "app"),
    ("dapp", "confide.cli.dapp", "app"),
    ("audit", "confide.cli.audit", "app"),
    ("worker", "confide.cli.worker", "app"),
)
# Single commands (not groups): (command, module, function).
COMMANDS = (("up", "confide.cli.up", "up"), ("demo", "confide.cli.demo", "demo"))
# Services other modules define, run as `confide serve NAME`: (name, module, function).
SERVICES = (
    ("hub", "confide.cli.serve_hub", "serve_hub"),
    ("storage", "confide.cli.serve_storage", "serve_storage"),
)


def build_app(argv: Sequence[str] = ()) -> typer.Typer:
    """The command tree, with only the command group ``argv`` names when it names one."""
    app = typer.Typer(
        name="confide",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    named = [group for group in GROUPS if group[0] == first]
    single = [command for command in COMMANDS if command[0] == first]
    for name, module, attribute in named or ([] if single else GROUPS):
        group = getattr(importlib.import_module(module), attribute)
        if name == "serve":
            _add_services(group)
        app.add_typer(group, name=name)
    for name, module, attribute in single or ([] if named else COMMANDS):
        app.command(name)(getattr(importlib.import_module(module), attribute))
    return app


def _add_services(serve: typer.Typer) -> None:
    """``confide serve hub`` and ``serve storage``, from their own modules (once)."""
    known = {command.name for command in serve.registered_commands}
    for name, module, attribute in SERVICES:
        if name in known:
            continue
        try:
            function = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            continue  # that service is not in this build
        serve.command(name)(function)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"confide {__version__}")
        raise typer.Exit


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """confide: confidential computing without leaking secrets."""


def _refuse(message: str, json_mode: bool) -> int:
    sys.stderr.write(f"error: {message}\n")
    if json_mode:
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    return 1


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM unwinds like an error, so half-written outputs are cleaned up."""
    del frame
    raise SystemExit(128 + signum)


def run(argv: list[str]) -> int:
    """Run the CLI on ``argv``; return the exit status (0 ok, 1 refused, 2 bad usage).

    Typer reports a command line that does not parse (exit 2); everything confide
    refuses becomes one ``error: …`` line and exit 1, never a traceback. With ``--json``
    stdout always holds one JSON document, whatever happened.
    """
    json_mode = "--json" in argv
    try:
        build_app(argv)(args=argv, prog_name="confide")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 2 and json_mode:
            sys.stdout.write(
                json.dumps({"ok": False, "error": "the command line does not parse"}) + "\n"
            )
        return code
    except ConfideError as exc:
        return _refuse(str(exc), json_mode)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _refuse(f"{exc.strerror or exc}{where}", json_mode)
    except KeyboardInterrupt:
        _refuse("interrupted", json_mode)
        return 130
    except Exception as exc:
        if os.environ.get("CONFIDE_DEBUG"):
            traceback.print_exc()
        # The message of an unexpected error could carry data: only its type is shown.
        return _refuse(
            f"internal error ({type(exc).__name__}); rerun with CONFIDE_DEBUG=1 for details",
            json_mode,
        )
    return 0


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(run(sys.argv[1:]))
