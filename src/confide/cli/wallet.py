"""``confide wallet``: create, show and import the Ethereum wallet that signs requests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from confide.cli.output import JsonOption, emit_json, note, say
from confide.config import default_wallet_path
from confide.errors import WalletError

if TYPE_CHECKING:
    from confide.crypto.wallet import Wallet

app = typer.Typer(
    help=(
        "Wallets: the Ethereum key (encrypted keystore, JSON v3) that identifies you and "
        "signs your requests. Default file: $CONFIDE_HOME/wallet.json."
    ),
    no_args_is_help=True,
)

WalletOption = Annotated[
    Path | None,
    typer.Option(
        "--wallet", metavar="FILE", help="Keystore file (default: $CONFIDE_HOME/wallet.json)."
    ),
]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="Keystore password (prefer CONFIDE_WALLET_PASSWORD or the prompt: "
        "a password on the command line lands in shell history).",
    ),
]


ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing wallet.")]


def wallet_path(option: Path | None) -> Path:
    return option or default_wallet_path()


def address_or_own(address: str | None, wallet: Path | None) -> str:
    """``address`` if given, else the address of the user's wallet (no password needed)."""
    from confide.crypto.keystore import keystore_address  # noqa: PLC0415

    return address or keystore_address(wallet_path(wallet))


def read_password(option: str | None, *, confirm: bool = False) -> str:
    """--password, then CONFIDE_WALLET_PASSWORD, then a hidden prompt on a terminal."""
    password = option if option is not None else os.environ.get("CONFIDE_WALLET_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise WalletError(
                "no wallet password: pass --password, set CONFIDE_WALLET_PASSWORD, or run "
                "on a terminal to be prompted"
            )
        password = typer.prompt("wallet password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise WalletError("the wallet password is empty")
    return password


@app.command("create")
def create(
    wallet: WalletOption = None,
    password: PasswordOption = None,
    force: ForceOption = False,
    json_out: JsonOption = False,
) -> None:
    """Create a new wallet (a fresh key, encrypted with your password)."""
    from confide.crypto.wallet import Wallet  # noqa: PLC0415  (start-up time)

    path = _new_wallet_path(wallet, force)
    _store(path, Wallet.generate(), password, force, json_out)


@app.command("show")
def show(wallet: WalletOption = None, json_out: JsonOption = False) -> None:
    """Print the wallet's address (no password needed)."""
    address = address_or_own(None, wallet)
    if json_out:
        emit_json({"address": address})
        return
    say(address)


@app.command("import")
def import_key(
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--private-key-file",
            metavar="F",
            help="File holding the private key (64 hex). Default: read from stdin or a "
            "hidden prompt, never from the command line.",
        ),
    ] = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    force: ForceOption = False,
    json_out: JsonOption = False,
) -> None:
    """Import an existing private key into an encrypted wallet."""
    from confide.crypto.wallet import Wallet  # noqa: PLC0415

    path = _new_wallet_path(wallet, force)
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise WalletError(f"cannot read {key_file}: {exc}") from None
    elif sys.stdin.isatty():
        key = typer.prompt("private key", hide_input=True)
    else:
        key = sys.stdin.readline().strip()
    _store(path, Wallet.from_private_key(key), password, force, json_out)


def _new_wallet_path(option: Path | None, force: bool) -> Path:
    path = wallet_path(option)
    if path.exists() and not force:
        raise WalletError(f"{path} already exists; not overwritten (use --force, or --wallet)")
    return path


def _store(path: Path, new: Wallet, password: str | None, force: bool, json_out: bool) -> None:
    """Encrypt ``new`` with the password into ``path`` and report its address."""
    from confide.crypto.wallet import save_wallet  # noqa: PLC0415

    save_wallet(path, new, read_password(password, confirm=True), overwrite=force)
    if json_out:
        emit_json({"address": new.address, "wallet": str(path)})
        return
    say(new.address)
    note(f"wallet written to {path} (mode 0600); keep the password: nothing can recover it")
