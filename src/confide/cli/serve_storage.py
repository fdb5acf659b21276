"""``confide serve storage``: the blob store (registered by confide.cli.main)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from confide.config import confide_home
from confide.errors import ConfideError

_SIZE = re.compile(r"(\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """Bytes from ``10GiB``, ``512MiB``, ``1.5``-free forms: an integer and an optional
    unit (B, KB/MB/GB/TB in powers of 10, KiB/MiB/GiB/TiB in powers of 2)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise typer.BadParameter(f"{text!r} is not a size: give e.g. 10GiB, 500MB or 1048576")
    number, unit = int(found.group(1)), (found.group(2) or "").lower()
    if "i" in unit:
        return number << (10 * "kmgt".index(unit[0]) + 10)
    return number * _UNITS[unit[:1]]


def serve_storage(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8091,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="sqlite:///FILE or postgresql://… (default: $CONFIDE_HOME/storage/storage.db)",
        ),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            help="Keep blobs in this directory (default: $CONFIDE_HOME/storage/blobs).",
        ),
    ] = None,
    s3_bucket: Annotated[
        str | None,
        typer.Option(
            "--s3-bucket",
            metavar="NAME",
            help="Keep blobs in this S3 bucket instead (credentials: the AWS_* variables).",
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option("--s3-endpoint", metavar="URL", help="An S3-compatible server's URL."),
    ] = None,
    quota: Annotated[
        str, typer.Option("--quota", metavar="SIZE", help="Bytes each wallet may upload.")
    ] = "10GiB",
    max_blob: Annotated[
        str, typer.Option("--max-blob", metavar="SIZE", help="The largest blob taken.")
    ] = "64GiB",
    trust: Annotated[
        list[str] | None,
        typer.Option(
            "--trust",
            metavar="URL",
            help="A hub or sms whose signing key may grant reads (its /v1/info, proven, "
            "is read at start). Repeatable.",
        ),
    ] = None,
    deployment: Annotated[
        str,
        typer.Option(
            "--deployment",
            envvar="CONFIDE_STORAGE_DEPLOYMENT",
            help="Deployment id (default: $CONFIDE_HOME/storage/deployment-id). Replicas "
            "on one database share it.",
        ),
    ] = "",
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key",
            metavar="FILE",
            envvar="CONFIDE_STORAGE_SIGNING_KEY_FILE",
            help="64 hex digits (default: $CONFIDE_HOME/storage/signing-key, made at first "
            "start). Replicas on one database share it.",
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key")] = None,
    behind_tls_proxy: Annotated[bool, typer.Option("--behind-tls-proxy")] = False,
) -> None:
    """Run the blob store until SIGTERM or ^C."""
    import time  # noqa: PLC0415

    from confide.cli.sms import reaching_the_database  # noqa: PLC0415
    from confide.storage.backend import Backend  # noqa: PLC0415
    from confide.storage.http import create_app  # noqa: PLC0415
    from confide.storage.service import Storage, StorageConfig  # noqa: PLC0415
    from confide.storage.trust import fetch_issuers  # noqa: PLC0415
    from confide.web.limits import Limits  # noqa: PLC0415
    from confide.web.server import check_bind, serve  # noqa: PLC0415

    check_bind(host, "storage", tls=bool(tls_cert and tls_key), behind_tls_proxy=behind_tls_proxy)
    if s3_bucket and directory:
        raise ConfideError("give --dir or --s3-bucket, not both")
    quota_bytes, max_blob_bytes = parse_size(quota), parse_size(max_blob)
    home = confide_home() / "storage"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = db or f"sqlite:///{home / 'storage.db'}"
    backend: Backend
    if s3_bucket:
        from confide.storage.s3 import S3Backend  # noqa: PLC0415

        backend = S3Backend(s3_bucket, endpoint_url=s3_endpoint)
        where = f"s3://{s3_bucket}" + (f" at {s3_endpoint}" if s3_endpoint else "")
    else:
        from confide.storage.local import LocalBackend  # noqa: PLC0415

        root = directory or home / "blobs"
        backend = LocalBackend(root)
        where = str(root)
    issuers = fetch_issuers(trust or [])
    config = StorageConfig(
        home=home,
        db_url=url,
        deployment_id=deployment,
        quota_bytes=quota_bytes,
        max_blob_bytes=max_blob_bytes,
        signing_key_file=signing_key,
    )
    with reaching_the_database(url):
        storage = Storage(config, backend, issuers)
    sys.stderr.write(
        f"storage on {host}:{port}, deployment {storage.config.deployment_id}, blobs in "
        f"{where}, quota {config.quota_bytes} bytes per wallet, grants from "
        f"{', '.join(sorted(issuers)) or 'nobody (give --trust URL)'}\n"
    )
    limits = Limits()
    serve(
        create_app(storage, time.time, limits=limits),
        name="storage",
        host=host,
        port=port,
        limits=limits,
        tls_cert=tls_cert,
        tls_key=tls_key,
        proxy_headers=behind_tls_proxy,
        memory="reused",  # streams: confide.web.server
    )
