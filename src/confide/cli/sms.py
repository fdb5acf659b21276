"""``confide serve sms`` and ``confide requester``: the secret service and its secrets."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.options import (
    SecretFileOption,
    SecretValueOption,
    SmsOption,
    TeeOption,
    TolerateOption,
    UpdateOption,
    read_secret_value,
    release_policy,
    shown_url,
    signing_client,
    sms_database_url,
    sms_url,
)
from confide.cli.output import JsonOption, emit_json, say
from confide.cli.wallet import PasswordOption, WalletOption, address_or_own
from confide.config import confide_home
from confide.errors import ConfideError

serve_app = typer.Typer(help="Run confide's services.", no_args_is_help=True)
requester_app = typer.Typer(
    help="Requester secrets: named secrets that your tasks map with --secret 1=NAME.",
    no_args_is_help=True,
)


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
        str,
        typer.Option(
            "--deployment",
            envvar="CONFIDE_SMS_DEPLOYMENT",
            help="Deployment id, part of every signed request's audience (default: the one "
            "kept in $CONFIDE_HOME/sms/deployment-id; at a first start, the one the database "
            "recorded, else a new random one). Replicas on one database share it.",
        ),
    ] = "",
    token_key: Annotated[
        Path | None,
        typer.Option(
            "--token-key",
            metavar="FILE",
            envvar="CONFIDE_SMS_TOKEN_KEY_FILE",
            help="The key that signs tokens (64 hex digits; default: "
            "$CONFIDE_HOME/sms/token-key, made at first start). Replicas on one database "
            "share it.",
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key")] = None,
    behind_tls_proxy: Annotated[bool, typer.Option("--behind-tls-proxy")] = False,
    collateral: Annotated[
        Path | None,
        typer.Option(
            "--collateral",
            metavar="PATH",
            help="Accept SGX/TDX quotes, verified with this collateral: a JSON file, or a "
            "directory of <fmspc>.json files (offline cache).",
        ),
    ] = None,
    pccs: Annotated[
        str | None,
        typer.Option(
            "--pccs", metavar="URL", help="Accept SGX/TDX quotes, collateral from a PCCS."
        ),
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option(
            "--hub",
            metavar="URL",
            envvar="CONFIDE_SMS_HUB",
            help="The hub whose apps, datasets, workerpools and tasks this sms serves: its "
            "owner-signed records are fetched from it and verified here, its deployment "
            "pinned at first contact (see docs/sms.md). Without it, only records their "
            "owners push to this sms are known, and no task.",
        ),
    ] = None,
) -> None:
    """Run the secret management service (and CAS) until SIGTERM or ^C."""
    import time  # noqa: PLC0415

    from confide.sms.http import create_app  # noqa: PLC0415
    from confide.sms.service import Sms, SmsConfig  # noqa: PLC0415
    from confide.web.limits import Limits  # noqa: PLC0415
    from confide.web.server import check_bind, serve  # noqa: PLC0415

    check_bind(host, "sms", tls=bool(tls_cert and tls_key), behind_tls_proxy=behind_tls_proxy)
    if hub is not None and not hub.startswith(("http://", "https://")):
        raise ConfideError(f"--hub {hub!r} is not an http(s) URL")
    home = confide_home() / "sms"
    url = sms_database_url(db)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with reaching_the_database(url):
        sms = Sms(
            SmsConfig(
                home=home,
                db_url=url,
                deployment_id=deployment,
                token_key_file=token_key,
                allow_sim=allow_sim,
                collateral=collateral,
                pccs_url=pccs,
                hub_url=hub,
            )
        )
    if allow_sim:
        sys.stderr.write(
            "warning: --allow-sim: simulation evidence is accepted; it protects nothing from "
            "the host (development only)\n"
        )
    backends = ", ".join(sms.backends()) or "none (give --collateral or --pccs)"
    pinned = sms.hub_deployment()
    hub_line = (
        "no hub (only records pushed to this sms are known)"
        if hub is None
        else f"hub {hub} (deployment {pinned or 'pinned at first contact'})"
    )
    sys.stderr.write(
        f"sms {sms.config.sms_id} on {host}:{port}, deployment {sms.config.deployment_id}, "
        f"database {shown_url(url)}, attestation: {backends}, {hub_line}, token key "
        f"fingerprint {sms.token_fingerprint()} (confide sms trust URL --fingerprint)\n"
    )
    limits = Limits()  # connections, bodies, timeouts: confide.web.limits
    serve(
        create_app(sms, time.time, limits=limits),
        name="sms",
        host=host,
        port=port,
        limits=limits,
        tls_cert=tls_cert,
        tls_key=tls_key,
        # X-Forwarded-* headers are believed only with --behind-tls-proxy, and then from
        # the addresses in FORWARDED_ALLOW_IPS (uvicorn's default: the loopback; set it
        # for a proxy on another host). Nothing the sms decides depends on them.
        proxy_headers=behind_tls_proxy,
    )


@contextmanager
def reaching_the_database(url: str) -> Iterator[None]:
    """A database that is unreachable or locked is a refusal naming it, not a traceback."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError  # noqa: PLC0415

    from confide.db.availability import reason, unavailability  # noqa: PLC0415

    try:
        yield
    except (DBAPIError, PoolTimeoutError) as exc:
        if unavailability(exc) is None:
            raise
        raise ConfideError(f"cannot reach the database {shown_url(url)}: {reason(exc)}") from None


@requester_app.command("push-secret")
def push_secret(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Secret name: 1-64 of A-Z a-z 0-9 _ -.")
    ],
    secret_value: SecretValueOption = None,
    secret_file: SecretFileOption = None,
    update: UpdateOption = False,
    tee: TeeOption = None,
    tolerate: TolerateOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store a named secret (create-only unless --update); it is never shown again.
    Your tasks map it with --secret 1=NAME. The value is read from --secret-value,
    --secret-file, or else a hidden prompt (stdin when it is not a terminal)."""
    policy = release_policy(tee, tolerate)
    value = read_secret_value(secret_value, secret_file)
    client = signing_client(sms, wallet, password)
    version = client.push_requester_secret(name, value, update=update, policy=policy)
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
