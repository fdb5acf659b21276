"""``confide volume``: encrypt, decrypt, verify and describe encrypted volumes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated

import typer

from confide.cli.options import HubOption, OwnerOption, SmsOption, StorageOption
from confide.cli.output import JsonOption, emit_json, note, progress_bar, say, warn
from confide.cli.wallet import PasswordOption, WalletOption
from confide.crypto import SymmetricKey, read_key_file, write_key_file
from confide.crypto.keys import key_file_is_private
from confide.errors import KeyFileError
from confide.volume import decrypt_tree, encrypt_tree, read_volume_info, verify_tree

app = typer.Typer(
    help=(
        "Encrypted volumes: a directory tree as authenticated, encrypted objects.\n\n"
        "The volume's tag names one exact version of its content: keep it, and pass it "
        "to decrypt/verify with --tag to catch a rolled-back or replaced volume.\n\n"
        "A CAS session's volumes: `confide volume push DIR --session S --volume V` "
        "encrypts DIR with a new key, uploads it and records key and tag in the session; "
        "`confide volume pull --session S --volume V DST` decrypts the current version "
        "(readers of the session only; an older copy is refused)."
    ),
    no_args_is_help=True,
)

_TAG = re.compile(r"[0-9a-fA-F]{64}")


def _check_tag(value: str | None) -> str | None:
    if value is not None and not _TAG.fullmatch(value):
        raise typer.BadParameter("a volume tag is 64 hex characters")
    return None if value is None else value.lower()


def _load_key(path: Path) -> SymmetricKey:
    key = read_key_file(path)
    if not key_file_is_private(path):
        warn(f"key file {path} is readable by other users; chmod 600 it")
    return key


SrcDir = Annotated[
    Path, typer.Argument(metavar="SRC", help="The directory tree to encrypt.", show_default=False)
]
Volume = Annotated[
    Path,
    typer.Argument(metavar="VOLUME", help="The encrypted volume directory.", show_default=False),
]
Force = Annotated[bool, typer.Option("--force", help="Replace DST if it exists and is not empty.")]
KeyFile = Annotated[Path, typer.Option("--key-file", metavar="F", help="The volume's key file.")]
Tag = Annotated[
    str | None,
    typer.Option(
        "--tag",
        callback=_check_tag,
        metavar="HEX",
        help="Refuse the volume unless its tag is this one (catches rollback).",
    ),
]


@app.command("encrypt")
def encrypt(
    src: SrcDir,
    dst: Annotated[
        Path, typer.Argument(metavar="DST", help="Where to create the volume.", show_default=False)
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            metavar="F",
            help="Key file to use; created (mode 0600) if missing. Default: a new DST.key.",
        ),
    ] = None,
    force: Force = False,
    json_out: JsonOption = False,
) -> None:
    """Encrypt the directory tree SRC into the volume DST and print its tag."""
    created: Path | None = None
    if key_file is None:
        named = dst if dst.name else dst.resolve()  # DST "." or "..": name it after the dir
        key_file = named.with_name(named.name + ".key")
        if key_file.exists():
            raise KeyFileError(
                f"{key_file} already exists; pass --key-file {key_file} to reuse that key"
            )
    if key_file.exists():
        key = _load_key(key_file)
    else:
        key = SymmetricKey.generate()
        write_key_file(key_file, key)
        created = key_file
    try:
        with progress_bar("encrypting", lambda: _tree_size(src), not json_out) as advance:
            result = encrypt_tree(src, dst, key, force=force, progress=advance)
    except BaseException:
        if created is not None:
            created.unlink(missing_ok=True)
        raise
    if json_out:
        emit_json(
            {
                "tag": result.tag,
                "key_file": str(key_file),
                "volume": str(dst),
                "files": result.files,
                "bytes": result.bytes,
            }
        )
        return
    say(result.tag)
    note(
        f"encrypted {result.files} files ({result.bytes} bytes) into {dst}; "
        f"key: {key_file}{' (new)' if created else ''}"
    )


@app.command("decrypt")
def decrypt(
    src: Volume,
    dst: Annotated[
        Path, typer.Argument(metavar="DST", help="Where to restore the tree.", show_default=False)
    ],
    key_file: KeyFile,
    tag: Tag = None,
    force: Force = False,
    json_out: JsonOption = False,
) -> None:
    """Restore the tree of VOLUME into DST; nothing is written unless all of it checks."""
    key = _load_key(key_file)
    with progress_bar("decrypting", lambda: _volume_size(src), not json_out) as advance:
        result = decrypt_tree(src, dst, key, expected_tag=tag, force=force, progress=advance)
    if json_out:
        emit_json(
            {
                "tag": result.tag,
                "destination": str(dst),
                "files": result.files,
                "bytes": result.bytes,
            }
        )
        return
    say(f"decrypted {result.files} files ({result.bytes} bytes) into {dst}")
    say(f"tag {result.tag}{' (as expected)' if tag else ''}")


@app.command("verify")
def verify(
    src: Volume,
    key_file: KeyFile,
    tag: Tag = None,
    json_out: JsonOption = False,
) -> None:
    """Check every byte of VOLUME without writing anything."""
    key = _load_key(key_file)
    with progress_bar("verifying", lambda: _volume_size(src), not json_out) as advance:
        result = verify_tree(src, key, expected_tag=tag, progress=advance)
    if json_out:
        emit_json({"ok": True, "tag": result.tag, "files": result.files, "bytes": result.bytes})
        return
    say(f"volume {src} is intact: {result.files} files, {result.bytes} bytes")
    say(f"tag {result.tag}{' (as expected)' if tag else ''}")


@app.command("info")
def info(src: Volume, json_out: JsonOption = False) -> None:
    """Describe VOLUME without its key (the stored tag is NOT verified)."""
    details = read_volume_info(src)
    if json_out:
        emit_json(
            {
                "format_version": details.format_version,
                "segment_size": details.segment_size,
                "volume_version_id": details.volume_version_id,
                "objects": details.objects,
                "tag": details.stored_tag,
                "tag_verified": False,
            }
        )
        return
    say(f"volume          {src}")
    say(f"format version  {details.format_version}")
    say(f"segment size    {details.segment_size}")
    say(f"objects         {details.objects}")
    say(f"tag             {details.stored_tag} (unverified: check it with verify --key-file)")


def _tree_size(src: Path) -> int:
    """Bytes under ``src``, for the progress bar only (0 when unknown)."""
    if not src.is_dir():
        return 0
    return sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())


def _volume_size(src: Path) -> int:
    objects = src / "objects"
    if not objects.is_dir():
        return 0
    return sum(p.stat().st_size for p in objects.iterdir())


SessionName = Annotated[
    str, typer.Option("--session", metavar="NAME", help="The CAS session.", show_default=False)
]
VolumeName = Annotated[
    str,
    typer.Option("--volume", metavar="VOL", help="The session's volume.", show_default=False),
]


@app.command("push")
def push(
    src: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="The directory tree to push.", show_default=False),
    ],
    session: SessionName,
    volume: VolumeName,
    owner: OwnerOption = None,
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            metavar="ENCDIR",
            help="Also leave the encrypted volume in ENCDIR (new or empty).",
        ),
    ] = None,
    hub: HubOption = None,
    storage: StorageOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Push DIR as the next version of an input volume of a session: encrypted with a
    new key (so a reader of an older version cannot open it), uploaded to the storage,
    then key, tag and blob recorded in the session (compare-and-swap on its current
    tag). Prints the new tag."""
    from confide.cli.options import platform  # noqa: PLC0415
    from confide.cli.wallet import address_or_own  # noqa: PLC0415
    from confide.client.volumes import push_volume  # noqa: PLC0415

    where = platform(hub, storage, sms, wallet, password, signing=True)
    with progress_bar("encrypting", lambda: _tree_size(src), not json_out) as advance:
        pushed = push_volume(
            where,
            src,
            owner=address_or_own(owner, wallet),
            session=session,
            volume=volume,
            keep=keep,
            progress=advance,
        )
    if json_out:
        emit_json(dataclasses.asdict(pushed))
        return
    say(pushed.tag)
    note(
        f"pushed {pushed.files} files ({pushed.bytes} bytes) as volume {volume!r} of session "
        f"{session}: tag {pushed.tag} (was {pushed.previous_tag or 'none'})"
        + (f"; encrypted copy in {keep}" if keep is not None else "")
    )


@app.command("pull")
def pull(
    dst: Annotated[
        Path,
        typer.Argument(
            metavar="DST", help="Where to decrypt it (new or empty).", show_default=False
        ),
    ],
    session: SessionName,
    volume: VolumeName,
    owner: OwnerOption = None,
    hub: HubOption = None,
    storage: StorageOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Decrypt the current version of a session's volume into DST: the sms releases its
    key to readers of the session only (sealed to a one-time key, signed by the pinned
    sms, audited); the blob must hash and decrypt to the session's current tag, or
    nothing is written."""
    from confide.cli.options import platform  # noqa: PLC0415
    from confide.cli.wallet import address_or_own  # noqa: PLC0415
    from confide.client.volumes import pull_volume  # noqa: PLC0415

    where = platform(hub, storage, sms, wallet, password, signing=True)
    with progress_bar("decrypting", lambda: 0, not json_out) as advance:
        pulled = pull_volume(
            where,
            dst,
            owner=address_or_own(owner, wallet),
            session=session,
            volume=volume,
            progress=advance,
        )
    if json_out:
        emit_json(dataclasses.asdict(pulled) | {"destination": str(dst)})
        return
    say(pulled.tag)
    note(f"decrypted {pulled.files} files ({pulled.bytes} bytes) of volume {volume!r} into {dst}")
