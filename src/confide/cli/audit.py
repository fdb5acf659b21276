"""``confide audit``: check and read the sms's audit log, straight from its database.

Read-only: the database must exist (nothing is created), no migration runs, and the
connection cannot write (see :mod:`confide.db.readonly`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from confide.cli.options import shown_url, sms_database_url
from confide.cli.output import JsonOption, emit_json, say
from confide.errors import ConfideError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from confide.db.audit import AuditEntry

app = typer.Typer(
    help=(
        "The sms's audit log: one hash-chained entry per secret write, session change, "
        "attestation, release and tag update (names and versions, never a value)."
    ),
    no_args_is_help=True,
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="The sms's database: sqlite:///FILE or postgresql://… (default: the one "
        "`confide serve sms` uses, $CONFIDE_HOME/sms/sms.db).",
    ),
]
_EXPECT = re.compile(r"(\d{1,18}):([0-9A-Fa-f]{64})")


def _expectation(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    match = _EXPECT.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter("--expect takes SEQ:HASH, e.g. 41:<64 hex> (from a verify)")
    return int(match.group(1)), match.group(2).lower()


@contextmanager
def _audit_log(db: str | None) -> Iterator[Engine]:
    """The sms's database, opened read-only; its failures become one-line refusals."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError  # noqa: PLC0415

    from confide.db.readonly import database_error, open_readonly  # noqa: PLC0415

    url = sms_database_url(db)
    engine = open_readonly(url, shown_url(url), "audit_log")
    try:
        yield engine
    except (DBAPIError, PoolTimeoutError) as exc:
        raise database_error(exc, shown_url(url)) from None
    finally:
        engine.dispose()


@app.command("verify")
def verify(
    db: DbOption = None,
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            metavar="SEQ:HASH",
            help="Entry SEQ must still exist with this hash: catches entries removed from "
            "the end, or a log rewritten, since you noted the head.",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Recompute the hash chain; exit 1 naming the first entry that breaks it."""
    from confide.db.audit import check_chain  # noqa: PLC0415
    from confide.db.engine import reading  # noqa: PLC0415

    wanted = _expectation(expect)
    document: dict[str, Any] = {"ok": False, "entries": None, "head": None, "error": None}
    try:
        with _audit_log(db) as engine, reading(engine) as connection:
            report = check_chain(connection, wanted)
    except ConfideError as exc:
        document["error"] = str(exc)
    else:
        head = report.head
        document.update(
            ok=report.error is None,
            entries=report.entries,
            head=None if head is None else {"seq": head.seq, "hash": head.hash},
            error=report.error,
        )
    if json_out:
        emit_json(document)
    elif document["ok"]:
        say(f"audit log verified: {document['entries']} entries")
        if document["head"] is not None:
            say(f"head {document['head']['seq']}:{document['head']['hash']}")
            if wanted is not None:
                say(f"entry {wanted[0]} has the expected hash")
    if not document["ok"]:
        typer.echo(f"error: {document['error']}", err=True)
        raise typer.Exit(1)


@app.command("show")
def show(
    since: Annotated[
        int, typer.Option("--since", metavar="SEQ", min=0, help="The first entry to list.")
    ] = 0,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", min=1, help="List at most N entries.")
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List entries, oldest first: seq, time (UTC), actor, action, subject, detail."""
    from confide.db.audit import entries  # noqa: PLC0415
    from confide.db.engine import reading  # noqa: PLC0415

    with _audit_log(db) as engine, reading(engine) as connection:
        listed = entries(connection, since, limit)
    if json_out:
        sys.stdout.write(json.dumps([_entry_json(e) for e in listed], sort_keys=True) + "\n")
        return
    if not listed:
        say(f"no audit log entries from {since} on")
        return
    _print_table(listed)


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "time": _time(entry.at),
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "detail": entry.detail,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _time(at: int) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_table(listed: list[AuditEntry]) -> None:
    # rich is imported only here: it costs start-up time otherwise.
    from rich import box  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, highlight=False)
    for column in ("seq", "time (UTC)", "actor", "action", "subject", "detail"):
        table.add_column(column, justify="right" if column == "seq" else "left")
    for entry in listed:
        detail = json.dumps(entry.detail, sort_keys=True, ensure_ascii=False)
        cells = (str(entry.seq), _time(entry.at), entry.actor, entry.action, entry.subject, detail)
        table.add_row(*(Text(_printable(cell)) for cell in cells))  # Text: no markup parsed
    # On a terminal rich fits the table to its width; piped, every cell stays whole.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)
    console.print(table)


def _printable(text: str) -> str:
    """Control characters escaped: a stored name must not drive the operator's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
