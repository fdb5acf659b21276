"""``confide app``: scaffold, measure and deploy an app bundle, push its secret, run it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.app_manifest import manifest
from confide.cli.app_run import run
from confide.cli.options import (
    AppMeasurementOption,
    HubOption,
    SecretFileOption,
    SecretValueOption,
    SmsOption,
    StorageOption,
    TeeOption,
    TolerateOption,
    UpdateOption,
    platform,
    read_secret_value,
    release_policy,
    sms_url,
)
from confide.cli.output import JsonOption, emit_json, note, progress_bar, say
from confide.cli.records import print_list, print_view, verified_view
from confide.cli.wallet import PasswordOption, WalletOption

app = typer.Typer(
    help="App bundles (a directory with confide-app.yml and the app's files): scaffold, "
    "measure, deploy to the hub, push the app developer secret, and run tasks.\n\n"
    "Typical path: `confide app init DIR`, `confide app deploy DIR`, `confide app "
    "push-secret APP`, `confide app run APP --workerpool POOL`.",
    no_args_is_help=True,
)
app.command("run", context_settings={"allow_extra_args": True})(run)
app.command("manifest")(manifest)


class Language(StrEnum):
    python = "python"
    node = "node"
    native = "native"  # an executable of the bundle, run as is


Bundle = Annotated[
    Path, typer.Argument(metavar="DIR", help="The app bundle directory.", show_default=False)
]
AppAddress = Annotated[
    str, typer.Argument(metavar="APP", help="The app's address (0x and 40 hex, any case).")
]


@app.command("init")
def init(
    directory: Bundle,
    lang: Annotated[Language, typer.Option("--lang", help="The app's language.")] = Language.python,
    name: Annotated[
        str | None, typer.Option("--name", help="App name (default: the directory's name).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Create an app bundle in DIR: confide-app.yml and app.py (app.js for node, an
    executable app.sh for native: any program of the bundle run as is)."""
    from confide.bundle import init_bundle, measure_bundle  # noqa: PLC0415  (start-up time)

    written = init_bundle(directory, lang.value, name)
    measurement = measure_bundle(directory)
    if json_out:
        emit_json({"files": [str(p) for p in written], "measurement": str(measurement)})
        return
    for path in written:
        say(f"wrote {path}")
    say(f"measurement {measurement}")
    say(f"next: edit {written[1].name}, then `confide app measure {directory}`")


@app.command("measure")
def measure(directory: Bundle, json_out: JsonOption = False) -> None:
    """Print the bundle's simulation measurement (sim:<sha256>)."""
    from confide.bundle import measure_bundle  # noqa: PLC0415  (start-up time)

    measurement = measure_bundle(directory)
    if json_out:
        emit_json({"measurement": str(measurement)})
        return
    say(str(measurement))


@app.command("push-secret")
def push_secret(
    address: AppAddress,
    secret_value: SecretValueOption = None,
    secret_file: SecretFileOption = None,
    update: UpdateOption = False,
    tee: TeeOption = None,
    tolerate: TolerateOption = None,
    app_measurements: AppMeasurementOption = None,
    hub: HubOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store the app developer secret (your wallet must own the app); it is never shown
    again. The app's tasks receive it as IEXEC_APP_DEVELOPER_SECRET, and only inside an
    enclave that runs one of the --app-measurement values you sign here. Without
    --app-measurement, the measurement is the one in the app record your own wallet
    signed at `confide app deploy` (fetched from the hub and its signature checked here,
    so the hub cannot substitute code). Create-only unless --update.
    The value is read from --secret-value, --secret-file, or else a hidden prompt (stdin
    when it is not a terminal)."""
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415

    target = normalise_address(address)
    release_policy(tee, tolerate, apps=app_measurements)  # checked before anything else
    value = read_secret_value(secret_value, secret_file)
    where = platform(hub, None, sms, wallet, password, signing=True)
    if not app_measurements:
        from confide.client.hub import own_record  # noqa: PLC0415

        owner = where.signer().address
        record = own_record(where.hub, target, "app", owner, where.records_dir)
        app_measurements = [str(record.measurement)]
        note(f"released to {record.measurement}, the measurement your wallet signed for {target}")
    policy = release_policy(tee, tolerate, apps=app_measurements)
    version = where.sms.push_app_secret(target, value, update=update, policy=policy)
    if json_out:
        emit_json({"app": target, "version": version})
        return
    say(f"app secret of {target} stored (version {version})")


@app.command("check-secret")
def check_secret(address: AppAddress, sms: SmsOption = None, json_out: JsonOption = False) -> None:
    """Tell whether the app has a developer secret (never its value); exit 1 if not."""
    from confide.client.sms import SmsClient  # noqa: PLC0415
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415

    target = normalise_address(address)
    exists = SmsClient(sms_url(sms)).app_secret_exists(target)
    if json_out:
        emit_json({"app": target, "exists": exists})
    else:
        say(f"app secret of {target} is {'set' if exists else 'not set'}")
    if not exists:
        raise typer.Exit(1)


@app.command("deploy")
def deploy(
    directory: Bundle,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The app's name (default: the name in confide-app.yml)."),
    ] = None,
    measurement: Annotated[
        str | None,
        typer.Option(
            "--measurement",
            metavar="M",
            help="The measurement the TEE build of this bundle runs as (sgx:<64 hex>, "
            "tdx:<96 hex>); default: the bundle's sim measurement (`confide app measure`).",
        ),
    ] = None,
    allow_logs: Annotated[
        bool,
        typer.Option(
            "--allow-logs",
            help="Let each task's requester read its logs (`confide task debug --logs`: "
            "the last 100 kB of stdout and stderr, every released secret redacted, sealed "
            "to the requester). Default: no log leaves the enclave, so nothing the app "
            "prints can reveal your app developer secret.",
        ),
    ] = False,
    hub: HubOption = None,
    storage: StorageOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Deploy the app bundle DIR: measure it, upload it (one deterministic tar) to the
    storage, sign its app record (name, bundle digest, measurement) with your wallet and
    register it with the hub and the sms. Deploying again makes a new version of the same
    app (same address). Prints the app's address: what `app push-secret` and `app run`
    take."""
    from confide.attestation.measurement import Measurement  # noqa: PLC0415
    from confide.client.deploy import deploy_app, packed_size  # noqa: PLC0415

    typed = None if measurement is None else Measurement.parse(measurement)
    where = platform(hub, storage, sms, wallet, password, signing=True)
    signer = where.signer()
    with progress_bar("uploading", lambda: packed_size(directory), not json_out) as advance:
        signed, _ = deploy_app(
            where,
            signer,
            directory,
            name=name,
            measurement=typed,
            progress=advance,
            logs=allow_logs,
        )
    record = signed.record
    result = {
        "address": record.address,
        "measurement": str(record.measurement),
        "bundle": str(record.field("bundle")),
        "logs": bool(record.field("logs")),
    }
    if json_out:
        emit_json(
            result | {"name": record.name, "owner": record.owner, "sequence": record.sequence}
        )
        return
    say(record.address)
    note(
        f"app {record.name!r} deployed: measurement {record.measurement}, bundle "
        f"{result['bundle']}; next: `confide app push-secret {record.address}` (optional), "
        f"then `confide app run {record.address} --workerpool POOL`"
    )


@app.command("show")
def show(
    address: Annotated[str, typer.Argument(metavar="APP", help="The app's address (or its name).")],
    hub: HubOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show an app record (its owner's signature checked here)."""
    print_view(verified_view(platform(hub, None, None), "app", address), json_out)


@app.command("list")
def list_apps(
    owner: Annotated[
        str | None, typer.Option("--owner", metavar="A", help="Only this owner's apps.")
    ] = None,
    hub: HubOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the apps the hub knows (with --json: a JSON list)."""
    print_list(platform(hub, None, None), "app", owner, json_out)
