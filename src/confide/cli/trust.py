"""``confide sms trust``: choose the sms your secrets go to, by its key's fingerprint.

A hub never chooses the sms (confide.client.platform): the sms of a hub that is not
``confide up`` on this machine is used only once the user trusted it here, having
compared the fingerprint its operator's ``confide serve sms`` printed at start.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from confide.cli.output import JsonOption, emit_json, note, say
from confide.config import confide_home
from confide.errors import AuthError

app = typer.Typer(
    help="The sms you trust with your secrets (pinned by its key's fingerprint).",
    no_args_is_help=True,
)
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")


@app.command("trust")
def trust(
    url: Annotated[
        str, typer.Argument(metavar="URL", help="The sms's URL (https:// beyond 127.0.0.1).")
    ],
    fingerprint: Annotated[
        str,
        typer.Option(
            "--fingerprint",
            metavar="HEX",
            help="SHA-256 (64 hex) of the sms's signing key, as `confide serve sms` prints "
            "it at start: get it from its operator over a channel you trust.",
        ),
    ],
    json_out: JsonOption = False,
) -> None:
    """Trust the sms at URL: check that it holds the key with this fingerprint (it signs
    our challenge) and pin that key, replacing any pinned before. Commands then send
    secrets there when a hub names it (or with --sms URL)."""
    from confide.client.pins import write_pin  # noqa: PLC0415
    from confide.client.sms import SmsClient  # noqa: PLC0415

    wanted = fingerprint.strip().lower()
    if not _FINGERPRINT.fullmatch(wanted):
        raise AuthError(f"--fingerprint {fingerprint!r} is not a SHA-256 (64 hex characters)")
    client = SmsClient(url)  # no pin consulted: the fingerprint decides
    info = client.info()  # its proof: it holds the key its JWKS names
    found = client.fingerprint()
    if found != wanted:
        raise AuthError(
            f"the sms at {client.base_url} holds the key with fingerprint {found}, not "
            f"{wanted}: not trusted (is it the sms you meant?)"
        )
    pinner = SmsClient(url, trust_dir=confide_home() / "trust")
    path = pinner.pin_path() or confide_home() / "trust"
    replaced = path.exists()
    write_pin(path, client.base_url, json.dumps(info.get("jwks"), sort_keys=True))
    if json_out:
        emit_json(
            {
                "sms": client.base_url,
                "fingerprint": found,
                "deployment_id": info.get("deployment_id"),
                "replaced": replaced,
            }
        )
        return
    say(f"trusted the sms at {client.base_url} (fingerprint {found})")
    if replaced:
        note("the key pinned before for this URL was replaced")
