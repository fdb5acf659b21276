"""``confide worker``: run tasks of a workerpool this wallet is a member of."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from confide.cli.options import HubOption, platform
from confide.cli.output import JsonOption, emit_json, note
from confide.cli.wallet import PasswordOption, WalletOption

if TYPE_CHECKING:
    from confide.worker import Outcome

app = typer.Typer(
    help="Workers: claim the tasks of a workerpool, run each in the enclave runtime inside "
    "the sandbox (or TEE), upload the encrypted result and report. A worker never holds a "
    "secret, a key or a plaintext result.",
    no_args_is_help=True,
)


@app.command("start")
def start(
    workerpool: Annotated[
        str,
        typer.Option(
            "--workerpool",
            metavar="POOL",
            help="The pool's address, or OWNER/NAME (a bare NAME: yours, or under `confide "
            "up` its `default` pool).",
        ),
    ],
    tee: Annotated[
        str | None,
        typer.Option(
            "--tee",
            metavar="sim|sgx|tdx",
            help="The TEE tasks run in (default: the hardware found; with none, pass --tee "
            "sim for development: simulation protects nothing from this host).",
        ),
    ] = None,
    sandbox: Annotated[
        str | None,
        typer.Option(
            "--sandbox", metavar="bwrap|unshare", help="The sandbox (default: the best here)."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Tasks run at once.")
    ] = 1,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            "--work-dir",
            metavar="DIR",
            help="Where job directories are made (default: a fresh private temporary "
            "directory; never put it under a $CONFIDE_HOME).",
        ),
    ] = None,
    allow_loopback_inputs: Annotated[
        bool,
        typer.Option(
            "--allow-loopback-inputs", hidden=True, help="Tests only: input files on loopback."
        ),
    ] = False,
    hub: HubOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Claim and run the pool's tasks until SIGTERM or ^C (then finish the running
    tasks and exit 0). With --json: one summary document at exit."""
    from confide.client.orders import resolve  # noqa: PLC0415
    from confide.config import confide_home  # noqa: PLC0415
    from confide.worker import WorkerConfig, choose_tee, detect_tee, run_worker  # noqa: PLC0415

    if sandbox is not None and sandbox not in ("bwrap", "unshare"):
        raise typer.BadParameter("bwrap or unshare", param_hint="--sandbox")
    chosen = choose_tee(tee, detect_tee())
    where = platform(hub, None, None, wallet, password, signing=True)
    signer = where.signer()
    pool = resolve(where, "workerpool", workerpool, me=signer.address)
    _log_to_stderr()
    stop = threading.Event()
    tasks: list[dict[str, Any]] = []

    def stopping(signum: int, frame: object) -> None:
        del frame
        name = signal.Signals(signum).name
        if stop.is_set():  # a second one: do not wait for the running tasks
            note(f"{name} again: stopping now (the running tasks' leases expire; they run again)")
            raise SystemExit(128 + signum)
        note(f"{name}: no new claims; finishing the running tasks (again to stop now)")
        stop.set()

    def started(facts: dict[str, Any]) -> None:
        note(
            f"worker {facts['worker']} on workerpool {facts['workerpool']} (tee {facts['tee']}"
            f", {facts['concurrency']} at a time); hub {facts['hub']}"
        )
        if facts["tee"] == "sim":
            note("  simulation: it protects nothing from this machine's owner (development)")

    def finished(outcome: Outcome) -> None:
        tasks.append({"task": outcome.task, "status": outcome.status, "cause": outcome.cause})

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping)
    config = WorkerConfig(
        hub_url=where.hub.base_url,
        pool=pool,
        wallet=signer,
        tee=chosen,
        home=confide_home() / "worker",
        work_dir=work_dir,
        concurrency=concurrency,
        sandbox=sandbox,
        allow_loopback_inputs=allow_loopback_inputs,
        on_outcome=finished,
        on_start=started,
    )
    run_worker(config, stop)
    if json_out:
        emit_json({"worker": signer.address, "workerpool": pool, "tee": chosen, "tasks": tasks})


def _log_to_stderr() -> None:
    """The worker's events, one line each, on stderr (never a secret: it holds none)."""
    logger = logging.getLogger("confide.worker")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
