"""``confide serve sms`` and ``confide requester``: the secret service and its secrets."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from confide.cli.output import JsonOption, emit_json, say
from confide.cli.wallet import (
    PasswordOption,
    WalletOption,
    address_or_own,
    read_password,
    wallet_path,
)
from confide.config import confide_home
from confide.errors import ConfideError, SecretError

if TYPE_CHECKING:
    from confide.client.sms import SmsClient

serve_app = typer.Typer(help="Run confide's services.", no_args_is_help=True)
requester_app = typer.Typer(
    help="Requester secrets: named secrets that your tasks map with --secret 1=NAME.",
    no_args_is_help=True,
)

SmsOption = Annotated[
    str | None,
    typer.Option(
        "--sms", metavar="URL", help="The sms (default: $CONFIDE_SMS or http://127.0.0.1:8090)."
    ),
]


def sms_url(option: str | None) -> str:
    return option or os.environ.get("CONFIDE_SMS") or "http://127.0.0.1:8090"


@serve_app.command("sms")
def serve_sms(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8090,
    db: Annotated[
        str | None, typer.Option("--db", metavar="URL", help="sqlite:///FILE or postgresql://…")
    ] = None,
    allow_sim: Annotated[
        bool, typer.Option("--allow-sim", help="Accept simulation evidence (development only).")
    ] = False,
    deployment: Annotated[
        str, typer.Option("--deployment", help="Deployment id (part of every request's audience).")
    ] = "local",
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key")] = None,
    behind_tls_proxy: Annotated[bool, typer.Option("--behind-tls-proxy")] = False,
) -> None:
    """Run the secret management service (and CAS) until SIGTERM or ^C."""
    import time  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from confide.sms.http import create_app  # noqa: PLC0415
    from confide.sms.service import Sms, SmsConfig  # noqa: PLC0415

    if not _is_loopback(host) and not (tls_cert and tls_key) and not behind_tls_proxy:
        raise ConfideError(
            f"binding {host} exposes the sms beyond this machine: give --tls-cert and "
            f"--tls-key, or --behind-tls-proxy if a TLS proxy fronts it"
        )
    home = confide_home() / "sms"
    url = db or f"sqlite:///{home / 'sms.db'}"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    sms = Sms(SmsConfig(home=home, db_url=url, deployment_id=deployment, allow_sim=allow_sim))
    if allow_sim:
        sys.stderr.write(
            "warning: --allow-sim: simulation evidence is accepted; it protects nothing from "
            "the host (development only)\n"
        )
    sys.stderr.write(f"sms {sms.config.sms_id} on {host}:{port}, database {url.split('@')[-1]}\n")
    uvicorn.run(
        create_app(sms, time.time), host=host, port=port, log_level="warning",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@requester_app.command("push-secret")
def push_secret(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Secret name: 1-64 of A-Z a-z 0-9 _ -.")
    ],
    secret_value: Annotated[
        str | None,
        typer.Option(
            "--secret-value", help="The value (lands in shell history: prefer the prompt)."
        ),
    ] = None,
    secret_file: Annotated[
        Path | None, typer.Option("--secret-file", metavar="F", help="Read the value from a file.")
    ] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Add a new version of an existing secret.")
    ] = False,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store a named secret (create-only unless --update); it is never shown again."""
    value = _read_value(secret_value, secret_file)
    client = signing_client(sms, wallet, password)
    version = client.push_requester_secret(name, value, update=update)
    if json_out:
        emit_json({"name": name, "version": version})
        return
    say(f'secret "{name}" stored (version {version})')


@requester_app.command("check-secret")
def check_secret(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    address: Annotated[
        str | None, typer.Option("--address", help="Whose secret (default: your wallet's).")
    ] = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    json_out: JsonOption = False,
) -> None:
    """Tell whether a secret exists (never its value); exit 1 when it does not."""
    from confide.client.sms import SmsClient  # noqa: PLC0415

    owner = address_or_own(address, wallet)
    exists = SmsClient(sms_url(sms)).requester_secret_exists(owner, name)
    if json_out:
        emit_json({"name": name, "exists": exists})
    else:
        say(f'secret "{name}" is {"set" if exists else "not set"}')
    if not exists:
        raise typer.Exit(1)


def _read_value(value: str | None, path: Path | None) -> bytes:
    if value is not None and path is not None:
        raise SecretError("give --secret-value or --secret-file, not both")
    if path is not None:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SecretError(f"cannot read {path}: {exc.strerror}") from None
    if value is not None:
        return value.encode()
    if sys.stdin.isatty():
        return typer.prompt("secret value", hide_input=True).encode()
    piped = sys.stdin.buffer.read()
    return piped[:-1] if piped.endswith(b"\n") else piped  # only the newline echo adds


def signing_client(sms: str | None, wallet: Path | None, password: str | None) -> SmsClient:
    """An sms client that signs with the unlocked wallet and pins the sms's keys."""
    from confide.client.sms import SmsClient  # noqa: PLC0415
    from confide.crypto.wallet import load_wallet  # noqa: PLC0415

    unlocked = load_wallet(wallet_path(wallet), read_password(password))
    return SmsClient(sms_url(sms), wallet=unlocked, trust_dir=confide_home() / "trust")
