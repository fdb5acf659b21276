"""Options and helpers the CLI's commands share: which sms, which database, a secret's value
and release policy, and a client that signs with the wallet.

They live here, not in one command's module, so that commands import options without
importing each other (``confide dataset`` and ``confide app`` take the same push options as
``confide requester push-secret``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from confide.cli.wallet import read_password, wallet_path
from confide.config import confide_home
from confide.errors import SecretError

if TYPE_CHECKING:
    from confide.client.sms import SmsClient
    from confide.sms.release_policy import ReleasePolicy

SmsOption = Annotated[
    str | None,
    typer.Option(
        "--sms", metavar="URL", help="The sms (default: $CONFIDE_SMS or http://127.0.0.1:8090)."
    ),
]


SecretValueOption = Annotated[
    str | None,
    typer.Option("--secret-value", help="The value (lands in shell history: prefer the prompt)."),
]
SecretFileOption = Annotated[
    Path | None, typer.Option("--secret-file", metavar="F", help="Read the value from a file.")
]
UpdateOption = Annotated[
    bool,
    typer.Option(
        "--update",
        help="Add a new version of an existing secret (it keeps the current release policy "
        "unless policy options are given).",
    ),
]
TeeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tee",
        metavar="TEES",
        help="Which TEE types may receive it, comma-separated: sgx, tdx (and sim, which "
        "an sms accepts only with --allow-sim). Default: sgx and tdx, plus sim where allowed.",
    ),
]
TolerateOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tolerate",
        metavar="WEAKNESSES",
        help="Platform weaknesses under which it may still be released, comma-separated: "
        "outdated-tcb, sw-hardening-needed, configuration-needed, hyperthreading, "
        "debug-mode, simulation. Default: none (an up-to-date platform only).",
    ),
]
AppMeasurementOption = Annotated[
    list[str] | None,
    typer.Option(
        "--app-measurement",
        metavar="M",
        help="An app measurement that may receive it (typed: sgx:<64 hex>, tdx:<96 hex>, "
        "sim:<64 hex>, as `confide app measure` prints); repeat for several. Required for a "
        "new secret (no code gets it by default); an --update without it keeps the current.",
    ),
]


def release_policy(
    tee: list[str] | None,
    tolerate: list[str] | None,
    *,
    apps: list[str] | None = None,
    requesters: list[str] | None = None,
    workerpools: list[str] | None = None,
) -> ReleasePolicy:
    """The push options as a release policy, checked here before anything is sent."""
    from confide.sms.release_policy import ReleasePolicy  # noqa: PLC0415

    given = {
        "tee": tee,
        "tolerate": tolerate,
        "app": apps,
        "requester": requesters,
        "workerpool": workerpools,
    }
    items = [(key, value) for key, values in given.items() for value in values or []]
    return ReleasePolicy.from_query(items, restrictable=True)


def sms_url(option: str | None) -> str:
    return option or os.environ.get("CONFIDE_SMS") or "http://127.0.0.1:8090"


def sms_database_url(db: str | None) -> str:
    """``--db``, or the sms's own SQLite file under ``$CONFIDE_HOME`` (``serve sms`` and
    ``audit`` agree on it)."""
    return db or f"sqlite:///{confide_home() / 'sms' / 'sms.db'}"


def shown_url(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"(//[^/@:]*):[^/]*@", r"\1:***@", url)


def read_secret_value(value: str | None, path: Path | None) -> bytes:
    """--secret-value, --secret-file, else a hidden prompt (stdin when not a terminal)."""
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
    from confide.crypto.unlock import unlock_wallet  # noqa: PLC0415

    unlocking = unlock_wallet(wallet_path(wallet), read_password(password))  # scrypt, 0.7 s
    from confide.client.sms import SmsClient  # noqa: PLC0415  (imported meanwhile)

    # The wallet is awaited at the first signed request: the client is set up meanwhile.
    return SmsClient(sms_url(sms), wallet=unlocking.wait, trust_dir=confide_home() / "trust")
