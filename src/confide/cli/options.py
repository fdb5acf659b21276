"""Options and helpers the CLI's commands share: which hub, storage and sms, which database,
a secret's value and release policy, and clients that sign with the wallet.

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
    from confide.client.platform import Platform
    from confide.client.sms import SmsClient
    from confide.sms.release_policy import ReleasePolicy

DEFAULT_HUB = "http://127.0.0.1:8088"  # `confide up`

SmsOption = Annotated[
    str | None,
    typer.Option(
        "--sms",
        metavar="URL",
        help="The sms your secrets go to (default: $CONFIDE_SMS; else the sms of `confide "
        "up` on this machine; else the one the hub names, if you trusted it with `confide "
        "sms trust`). Pinned on first contact.",
    ),
]
OwnerOption = Annotated[
    str | None,
    typer.Option("--owner", metavar="ADDR", help="The session's owner (default: you)."),
]
HubOption = Annotated[
    str | None,
    typer.Option(
        "--hub",
        metavar="URL",
        help="The hub (default: $CONFIDE_HUB, else http://127.0.0.1:8088, where `confide up` "
        "listens).",
    ),
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        metavar="URL",
        help="The storage (default: $CONFIDE_STORAGE, else the one the hub names).",
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
    any_app: bool = False,
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
    if any_app:
        items.append(("any-app", "true"))
    return ReleasePolicy.from_query(items, restrictable=True)


def hub_url(option: str | None) -> str:
    return option or os.environ.get("CONFIDE_HUB") or DEFAULT_HUB


def sms_url(option: str | None, hub: str | None = None) -> str:
    """--sms, else $CONFIDE_SMS, else the sms of the hub when the user trusts it
    (confide.client.platform: the hub never chooses the sms)."""
    named = option or os.environ.get("CONFIDE_SMS")
    if named:
        return named
    return platform(hub, None, None).sms.base_url


def platform(
    hub: str | None,
    storage: str | None,
    sms: str | None,
    wallet: Path | None = None,
    password: str | None = None,
    *,
    signing: bool = False,
) -> Platform:
    """The hub, storage and sms a command talks to; with ``signing``, the wallet unlocked
    (its scrypt runs meanwhile) signs their requests."""
    from confide.cli.output import note  # noqa: PLC0415

    waiting = None
    if signing:
        from confide.crypto.unlock import unlock_wallet  # noqa: PLC0415

        waiting = unlock_wallet(wallet_path(wallet), read_password(password)).wait
    from confide.client.platform import Platform  # noqa: PLC0415

    def pinned(url: str, fingerprint: str) -> None:
        note(
            f"pinned the sms at {url} on first contact: key fingerprint {fingerprint} "
            f"(compare it with the one its operator's `confide serve sms` printed)"
        )

    return Platform(
        hub_url(hub),
        wallet=waiting,
        trust_dir=confide_home() / "trust",
        storage_url=storage or os.environ.get("CONFIDE_STORAGE") or None,
        sms_url=sms or os.environ.get("CONFIDE_SMS") or None,
        on_pin=pinned,
    )


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


def signing_client(
    sms: str | None, wallet: Path | None, password: str | None, hub: str | None = None
) -> SmsClient:
    """An sms client that signs with the unlocked wallet and pins the sms's keys; the sms
    is --sms, $CONFIDE_SMS, or the trusted sms of the hub (:func:`platform`)."""
    # The wallet is awaited at the first signed request: the client is set up meanwhile.
    return platform(hub, None, sms, wallet, password, signing=True).sms


def template_variables(pairs: list[str] | None) -> dict[str, str]:
    """``--var NAME=VALUE`` options as a mapping (a session template's values)."""
    variables: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--var takes NAME=VALUE, got {pair!r}")
        variables[name] = value
    return variables
