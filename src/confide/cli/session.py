"""``confide session``: CAS sessions (SCONE semantics) on the sms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from confide.cli.options import OwnerOption, SmsOption, signing_client, template_variables
from confide.cli.output import JsonOption, emit_json, say
from confide.cli.wallet import PasswordOption, WalletOption, address_or_own
from confide.errors import SessionError

app = typer.Typer(
    help=(
        "CAS sessions: YAML documents that name the measured services, their environment, "
        "volumes and secrets, and the platform weaknesses they tolerate."
    ),
    no_args_is_help=True,
)

VarOption = Annotated[
    list[str] | None,
    typer.Option("--var", metavar="NAME=VALUE", help="A template value ($NAME, ${NAME}); repeat."),
]


def _document(path: Path, variables: dict[str, str]) -> tuple[str, str]:
    """The file's text and name, checked locally first (the same parser as the sms)."""
    from confide.sms.session_document import parse_session  # noqa: PLC0415

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionError(f"cannot read {path}: {exc}") from None
    return text, parse_session(text, variables, str(path)).name


def _report(result: dict[str, Any], json_out: bool, verb: str) -> None:
    if json_out:
        emit_json(result)
        return
    say(f"session {result['owner']}/{result['name']} {verb}")
    say(f"hash {result['hash']}")


@app.command("create")
def create(
    file: Annotated[Path, typer.Argument(metavar="FILE.yml", show_default=False)],
    var: VarOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    r"""Create a session in your namespace from a YAML file.

    The file is checked here first, with the sms's own parser (errors name the
    line). A minimal session, for an app measured by `confide app measure DIR`:

    name: hello
    version: "1"
    services:
      - name: app
        measurements: \["sim:<64 hex>"]
        command: python3 app.py
    security:
      tolerate: \[simulation]   # development only: an sms run with --allow-sim

    Volumes, secrets, access policies, TDX pins, tolerations: docs/sms.md.
    The answer prints the session's hash; an update names it as `predecessor`.
    """
    variables = template_variables(var)
    text, _ = _document(file, variables)
    result = signing_client(sms, wallet, password).create_session(text, variables, str(file))
    _report(result, json_out, "created")


@app.command("update")
def update(
    file: Annotated[Path, typer.Argument(metavar="FILE.yml", show_default=False)],
    var: VarOption = None,
    owner: OwnerOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Replace a session; the file must name the current hash as its predecessor."""
    variables = template_variables(var)
    text, name = _document(file, variables)
    client = signing_client(sms, wallet, password)
    result = client.update_session(address_or_own(owner, wallet), name, text, variables, str(file))
    _report(result, json_out, "updated")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    owner: OwnerOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show the current version of a session (as YAML; secret values are never shown)."""
    import yaml  # noqa: PLC0415

    result = signing_client(sms, wallet, password).session(address_or_own(owner, wallet), name)
    if json_out:
        emit_json(result)
        return
    say(yaml.safe_dump(result, sort_keys=False).rstrip())


@app.command("history")
def history(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    owner: OwnerOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """List every version of a session, oldest first."""
    result = signing_client(sms, wallet, password).session_history(
        address_or_own(owner, wallet), name
    )
    if json_out:
        emit_json(result)
        return
    for entry in result["history"]:
        say(f"{entry['hash']}  (predecessor {entry['predecessor'] or 'none'})")
