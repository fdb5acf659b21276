"""``confide app run``: build, sign and queue a task order (iExec's ``iexec app run``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from confide.cli.options import HubOption, SmsOption, platform
from confide.cli.output import JsonOption, emit_json, note, say
from confide.cli.wallet import PasswordOption, WalletOption
from confide.config import confide_home
from confide.errors import ConfideError

if TYPE_CHECKING:
    from confide.client.hub import HubClient

FINAL = frozenset({"COMPLETED", "FAILED", "TIMEOUT"})
# A status is asked for every 0.1 s for the first 10 s (a small task completes within
# one), then every second: one public GET each time.
WATCH_FAST, WATCH_FAST_FOR, WATCH_SLOW = 0.1, 10.0, 1.0


def run(
    ctx: typer.Context,
    app: Annotated[
        str, typer.Argument(metavar="APP", help="The app's address (or its name on the hub).")
    ],
    workerpool: Annotated[
        str,
        typer.Option(
            "--workerpool",
            metavar="POOL",
            help="The workerpool to run on: its address (or its name on the hub, e.g. "
            "`default` under `confide up`).",
        ),
    ],
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            metavar="TAG",
            help="tee,sgx | tee,scone | tee,gramine (SGX frameworks) | tee,tdx | tee,sim "
            "(simulation: protects nothing). Default: tee,sim against `confide up` on this "
            "machine, tee,sgx elsewhere.",
        ),
    ] = None,
    args: Annotated[
        str, typer.Option("--args", help="The app's arguments (split with shell rules).")
    ] = "",
    input_files: Annotated[
        list[str] | None,
        typer.Option(
            "--input-files",
            metavar="URL#sha256=HEX",
            help="An input file the enclave fetches and checks against its SHA-256; "
            "several space-separated, or repeat the option.",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            metavar="D",
            help="A dataset (address or name): the order pins its checksum (its volume's tag).",
        ),
    ] = None,
    secrets: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            metavar="I=NAME",
            help="Map your requester secret NAME to IEXEC_REQUESTER_SECRET_I: one or more "
            "mappings (--secret 1=x1 3=y), or repeat the option. Each must exist already.",
        ),
    ] = None,
    category: Annotated[
        str,
        typer.Option("--category", help="XS (5 min), S (20 min), M (1 h), L (3 h), XL (10 h)."),
    ] = "XS",
    valid_for: Annotated[
        str,
        typer.Option(
            "--valid-for",
            metavar="DURATION",
            help="How long the order may be released (30m, 1h, 2d; at most 7d).",
        ),
    ] = "1h",
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", help="At most this many runs (1 to 10).")
    ] = 3,
    no_encrypt_result: Annotated[
        bool,
        typer.Option(
            "--no-encrypt-result",
            help="Store the result in the clear (default: sealed to your result key, made "
            "and registered on first need at $CONFIDE_HOME/result-key).",
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the task's status until it is final.")
    ] = False,
    hub: HubOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run APP on a workerpool: build a task order that pins the app record's measurement,
    the trusted sms's key, the dataset's checksum and your result key, sign it with your
    wallet and queue it on the hub (which asks the sms whether it could be released).
    Malformed options, or a secret that does not exist, fail before anything is created."""
    from confide.client.known import remember_order  # noqa: PLC0415
    from confide.client.orders import (  # noqa: PLC0415
        RunOptionError,
        RunOptions,
        build_order,
        parse_category,
        parse_duration,
        parse_input_files,
        parse_secret_mappings,
        parse_tag,
    )

    if ctx.args and not secrets:  # words after APP that no option took
        raise RunOptionError(f"unexpected argument(s): {' '.join(ctx.args)}")
    # iExec's shape: `--secret 1=x1 3=y`: the mappings after the first are extra words.
    mappings = [*(secrets or []), *ctx.args]
    if tag is not None:
        parse_tag(tag)
    options = RunOptions(
        app=app,
        workerpool=workerpool,
        tag=tag,
        args=args,
        input_files=parse_input_files(input_files or []),
        dataset=dataset,
        secrets=parse_secret_mappings(mappings),
        category=parse_category(category),
        valid_for=parse_duration(valid_for),
        max_attempts=max_attempts,
        encrypt_result=not no_encrypt_result,
    )
    where = platform(hub, None, sms, wallet, password, signing=True)
    signer = where.signer()
    order = build_order(where, signer, options, confide_home() / "result-key")
    signature = order.sign(signer)
    if where.records_dir is not None:  # a cancel must not depend on the hub's copy
        remember_order(where.records_dir.parent / "orders", order, signature)
    queued = where.hub.submit_task(order, signature)
    task = str(queued.get("task") or order.task_id())
    if task != order.task_id():
        raise ConfideError(f"the hub answered task {task}, not the order's {order.task_id()}")
    status = str(queued.get("status", "RECEIVED"))
    if watch:
        status = _watch(where.hub, task, status)
    if json_out:
        emit_json({"task": task, "status": status})
    else:
        say(task)
        if not watch:
            note(f"task {status.lower()}; follow it with `confide task show {task}`")
    if status in FINAL - {"COMPLETED"}:
        raise typer.Exit(1)


def _watch(hub: HubClient, task: str, status: str) -> str:
    """Poll the task until it is final: a live status line on a terminal (stderr), else
    one line per change."""
    import sys  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    console = Console(stderr=True)
    began = time.monotonic()
    live = sys.stderr.isatty()

    def line(view: dict[str, object]) -> str:
        cause = f" ({view.get('cause')})" if view.get("cause") else ""
        return f"task {task}: {status}{cause} ({time.monotonic() - began:.1f} s)"

    view: dict[str, object] = {}
    if not live:
        note(f"task {task}: {status}")
    with console.status(line({}), spinner="dots") if live else _nothing() as shown:
        while status not in FINAL:
            elapsed = time.monotonic() - began
            time.sleep(WATCH_FAST if elapsed < WATCH_FAST_FOR else WATCH_SLOW)
            view = hub.task(task) or {}
            current = str(view.get("status", status))
            changed = current != status
            status = current
            if shown is not None:
                shown.update(line(view))
            elif changed:
                note(line(view))
    if live:
        note(line(view))
    return status


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield None
