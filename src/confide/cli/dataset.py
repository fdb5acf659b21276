"""``confide dataset``: the key that decrypts a dataset, and who it may be released to."""

from __future__ import annotations

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
    help="Dataset keys: the key that decrypts your dataset inside an attested enclave, "
    "released only to the app measurements you name (and optionally only for given "
    "requesters and workerpools).",
    no_args_is_help=True,
)

DatasetAddress = Annotated[
    str, typer.Argument(metavar="DATASET", help="The dataset's address (0x and 40 hex, any case).")
]


@app.command("push-secret")
def push_secret(
    address: DatasetAddress,
    secret_value: SecretValueOption = None,
    secret_file: SecretFileOption = None,
    update: UpdateOption = False,
    tee: TeeOption = None,
    tolerate: TolerateOption = None,
    app_measurements: AppMeasurementOption = None,
    requesters: Annotated[
        list[str] | None,
        typer.Option(
            "--requester",
            metavar="ADDR",
            help="Release it only for tasks of this requester; repeat for several. "
            "Default: any requester.",
        ),
    ] = None,
    workerpools: Annotated[
        list[str] | None,
        typer.Option(
            "--workerpool",
            metavar="ADDR",
            help="Release it only on this workerpool; repeat for several. Default: any.",
        ),
    ] = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store the dataset's key (your wallet must own the dataset); it is never shown
    again. Create-only unless --update. The value is read from --secret-value,
    --secret-file, or else a hidden prompt (stdin when it is not a terminal)."""
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415

    target = normalise_address(address)
    policy = release_policy(
        tee, tolerate, apps=app_measurements, requesters=requesters, workerpools=workerpools
    )
    value = read_secret_value(secret_value, secret_file)
    version = signing_client(sms, wallet, password).push_dataset_key(
        target, value, update=update, policy=policy
    )
    if json_out:
        emit_json({"dataset": target, "version": version})
        return
    say(f"dataset key of {target} stored (version {version})")


@app.command("check-secret")
def check_secret(
    address: DatasetAddress, sms: SmsOption = None, json_out: JsonOption = False
) -> None:
    """Tell whether the dataset has a key (never its value); exit 1 if not."""
    from confide.client.sms import SmsClient  # noqa: PLC0415
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415

    target = normalise_address(address)
    exists = SmsClient(sms_url(sms)).dataset_key_exists(target)
    if json_out:
        emit_json({"dataset": target, "exists": exists})
    else:
        say(f"dataset key of {target} is {'set' if exists else 'not set'}")
    if not exists:
        raise typer.Exit(1)
