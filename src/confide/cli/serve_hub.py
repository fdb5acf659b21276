"""``confide serve hub``: the registry and task queue (registered by confide.cli.main)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from confide.config import confide_home


def serve_hub(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8089,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="sqlite:///FILE or postgresql://… (default: $CONFIDE_HOME/hub/hub.db)",
        ),
    ] = None,
    deployment: Annotated[
        str,
        typer.Option(
            "--deployment",
            envvar="CONFIDE_HUB_DEPLOYMENT",
            help="Deployment id: every record names it, every signed request's audience "
            "too (default: $CONFIDE_HOME/hub/deployment-id; at a first start the "
            "database's, else a new one). Replicas on one database share it.",
        ),
    ] = "",
    sms: Annotated[
        str | None,
        typer.Option(
            "--sms",
            metavar="URL",
            help="The sms this hub asks about an order's secrets before queueing it, and "
            "names in /v1/info (clients trust an sms themselves, never because of this).",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", metavar="URL", help="The storage named in /v1/info."),
    ] = None,
    lease_seconds: Annotated[
        int,
        typer.Option("--lease-seconds", min=1, help="A claim's lease, renewed by each heartbeat."),
    ] = 60,
    max_queued: Annotated[
        int,
        typer.Option("--max-queued", min=1, help="Tasks a requester may have queued or running."),
    ] = 100,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key",
            metavar="FILE",
            envvar="CONFIDE_HUB_SIGNING_KEY_FILE",
            help="64 hex digits (default: $CONFIDE_HOME/hub/signing-key, made at first "
            "start): signs storage grants and the info proof. Replicas share it.",
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key")] = None,
    behind_tls_proxy: Annotated[bool, typer.Option("--behind-tls-proxy")] = False,
) -> None:
    """Run the hub (apps, datasets, workerpools, tasks) until SIGTERM or ^C."""
    import time  # noqa: PLC0415

    from confide.cli.options import shown_url  # noqa: PLC0415
    from confide.cli.sms import reaching_the_database  # noqa: PLC0415
    from confide.hub.http import create_app  # noqa: PLC0415
    from confide.hub.service import Hub, HubConfig  # noqa: PLC0415
    from confide.web.limits import Limits  # noqa: PLC0415
    from confide.web.server import check_bind, serve  # noqa: PLC0415

    check_bind(host, "hub", tls=bool(tls_cert and tls_key), behind_tls_proxy=behind_tls_proxy)
    home = confide_home() / "hub"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = db or f"sqlite:///{home / 'hub.db'}"
    config = HubConfig(
        home=home,
        db_url=url,
        deployment_id=deployment,
        sms_url=sms,
        storage_url=storage,
        lease_seconds=lease_seconds,
        max_queued=max_queued,
        signing_key_file=signing_key,
    )
    with reaching_the_database(url):
        hub = Hub(config)
    sys.stderr.write(
        f"hub on {host}:{port}, deployment {hub.deployment_id}, database {shown_url(url)}, "
        f"sms {sms or 'none (secrets are not checked at queue time)'}, leases "
        f"{lease_seconds} s, at most {max_queued} queued tasks per requester\n"
    )
    limits = Limits()
    serve(
        create_app(hub, time.time, limits=limits),
        name="hub",
        host=host,
        port=port,
        limits=limits,
        tls_cert=tls_cert,
        tls_key=tls_key,
        proxy_headers=behind_tls_proxy,
    )
