"""``confide app``: scaffold an app bundle, print its measurement, push its secret."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.options import (
    AppMeasurementOption,
    SecretFileOption,
    SecretValueOption,
    SmsOption,
    TeeOption,
    TolerateOption,
    UpdateOption,
    read_secret_value,
    release_policy,
    signing_client,
    sms_url,
)
from confide.cli.output import JsonOption, emit_json, say
from confide.cli.wallet import PasswordOption, WalletOption

app = typer.Typer(
    help="App bundles (a directory with confide-app.yml and the app's files) and the app "
    "developer secret.",
    no_args_is_help=True,
)


class Language(StrEnum):
    python = "python"
    node = "node"


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
    """Create an app bundle in DIR: confide-app.yml and app.py (or app.js)."""
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
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store the app developer secret (your wallet must own the app); it is never shown
    again. The app's tasks receive it as IEXEC_APP_DEVELOPER_SECRET, and only inside an
    enclave that runs one of the --app-measurement values you sign here (the registry is
    not trusted to choose). Create-only unless --update.
    The value is read from --secret-value, --secret-file, or else a hidden prompt (stdin
    when it is not a terminal)."""
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415

    target = normalise_address(address)
    policy = release_policy(tee, tolerate, apps=app_measurements)
    value = read_secret_value(secret_value, secret_file)
    version = signing_client(sms, wallet, password).push_app_secret(
        target, value, update=update, policy=policy
    )
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
