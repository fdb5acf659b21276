"""Entry point: builds the command tree and turns every refusal into ``error: …``."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Annotated

import typer

from confide import __version__
from confide.cli import app as app_commands
from confide.cli import attestation, audit, dataset, result, session, sms, volume, wallet
from confide.errors import ConfideError

app = typer.Typer(
    name="confide",
    help=(
        "confide: confidential computing without leaking secrets.\n\n"
        "Encrypt data into volumes whose tag catches tampering and rollback; measure app "
        "bundles; verify hardware attestation quotes; run the secret service (`confide serve "
        "sms`) and keep secrets and CAS sessions in it, released only to attested enclaves. "
        "Run `confide COMMAND --help` for the options of a command."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(volume.app, name="volume")
app.add_typer(app_commands.app, name="app")
app.add_typer(attestation.app, name="attestation")
app.add_typer(wallet.app, name="wallet")
app.add_typer(sms.requester_app, name="requester")
app.add_typer(dataset.app, name="dataset")
app.add_typer(result.app, name="result")
app.add_typer(sms.serve_app, name="serve")
app.add_typer(session.app, name="session")
app.add_typer(audit.app, name="audit")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"confide {__version__}")
        raise typer.Exit


@app.callback()
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
        app(args=argv, prog_name="confide")
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
