"""``confide dataset``: encrypt a dataset into a volume, deploy it, and push the key that
decrypts it (and say who it may be released to)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    signing_client,
    sms_url,
)
from confide.cli.output import JsonOption, emit_json, note, progress_bar, say
from confide.cli.records import print_view, verified_view
from confide.cli.wallet import PasswordOption, WalletOption

app = typer.Typer(
    help="Datasets: `confide dataset encrypt SRC DST` makes an encrypted volume and its key "
    "file, `confide dataset deploy DST` uploads it and registers it (its checksum is the "
    "volume's tag), `confide dataset push-secret DATASET --secret-file DST.key` stores the "
    "key, released inside an attested enclave only to the app measurements you name (or "
    "--any-app), optionally only for given requesters and workerpools.",
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
    any_app: Annotated[
        bool,
        typer.Option(
            "--any-app",
            help="Release it to any app (explicit: without it, a new key names the app "
            "measurements that may receive it with --app-measurement).",
        ),
    ] = False,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store the dataset's key (your wallet must own the dataset); it is never shown
    again. Create-only unless --update. The value is read from --secret-value,
    --secret-file (the key file `dataset encrypt` wrote), or else a hidden prompt (stdin
    when it is not a terminal)."""
    from confide.crypto.wallet import normalise_address  # noqa: PLC0415
    from confide.errors import SecretError  # noqa: PLC0415

    target = normalise_address(address)
    policy = release_policy(
        tee,
        tolerate,
        apps=app_measurements,
        requesters=requesters,
        workerpools=workerpools,
        any_app=any_app,
    )
    if not update and not app_measurements and not any_app:
        raise SecretError(
            "a dataset key names the app measurements that may receive it "
            "(--app-measurement M, repeatable), or says --any-app explicitly"
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


@app.command("encrypt")
def encrypt(
    src: Annotated[
        Path, typer.Argument(metavar="SRC", help="The dataset's directory.", show_default=False)
    ],
    dst: Annotated[
        Path,
        typer.Argument(metavar="DST", help="Where to create the volume.", show_default=False),
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            metavar="F",
            help="Key file to use; created (mode 0600) if missing. Default: a new DST.key.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace DST if it exists and is not empty.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Encrypt the directory SRC into the volume DST (as `confide volume encrypt`) and
    print its tag, the checksum `dataset deploy` registers. Next: `confide dataset deploy
    DST`, then `confide dataset push-secret DATASET --secret-file DST.key`."""
    from confide.cli.volume import encrypt as encrypt_volume  # noqa: PLC0415

    encrypt_volume(src, dst, key_file=key_file, force=force, json_out=json_out)
    if not json_out:
        note(f"next: confide dataset deploy {dst}")


@app.command("deploy")
def deploy(
    volume: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="The encrypted volume (from `dataset encrypt`).", show_default=False
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="The dataset's name (default: DIR's name).")
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            metavar="F",
            help="Check every byte of the volume with its key first (default: DIR.key when "
            "it exists; without a key, the volume's stored tag is used unchecked).",
        ),
    ] = None,
    hub: HubOption = None,
    storage: StorageOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Deploy the encrypted volume DIR as a dataset: upload it (one blob) to the storage,
    sign the dataset record (its checksum = the volume's tag, which task orders pin) with
    your wallet and register it with the hub and the sms. Prints its address."""
    from confide.client.deploy import deploy_dataset, packed_size  # noqa: PLC0415

    checksum = _volume_tag(volume, key_file)
    where = platform(hub, storage, sms, wallet, password, signing=True)
    signer = where.signer()
    with progress_bar("uploading", lambda: packed_size(volume), not json_out) as advance:
        signed, _ = deploy_dataset(where, signer, volume, checksum, name=name, progress=advance)
    record = signed.record
    if json_out:
        emit_json(
            {
                "address": record.address,
                "checksum": checksum,
                "blob": record.field("blob"),
                "name": record.name,
                "owner": record.owner,
            }
        )
        return
    say(record.address)
    note(
        f"dataset {record.name!r} deployed, checksum {checksum}; next: confide dataset "
        f"push-secret {record.address} --secret-file KEY --app-measurement M (or --any-app)"
    )


@app.command("show")
def show(
    address: Annotated[
        str, typer.Argument(metavar="DATASET", help="The dataset's address (or its name).")
    ],
    hub: HubOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a dataset record (its owner's signature checked here)."""
    print_view(verified_view(platform(hub, None, None), "dataset", address), json_out)


def _volume_tag(volume: Path, key_file: Path | None) -> str:
    """The volume's tag: verified with its key when one is at hand, else as stored."""
    from confide.crypto import read_key_file  # noqa: PLC0415
    from confide.volume import read_volume_info, verify_tree  # noqa: PLC0415

    beside = volume.resolve().with_name(volume.resolve().name + ".key")
    key_path = key_file or (beside if beside.exists() else None)
    if key_path is None:
        return read_volume_info(volume).stored_tag
    return verify_tree(volume, read_key_file(key_path)).tag
