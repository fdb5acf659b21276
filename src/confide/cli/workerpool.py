"""``confide workerpool``: pools of workers, their members, and who may submit to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from confide.cli.options import HubOption, SmsOption, platform
from confide.cli.output import JsonOption, emit_json, note, say
from confide.cli.records import print_list, print_view, verified_view
from confide.cli.wallet import PasswordOption, WalletOption

if TYPE_CHECKING:
    from confide.records import SignedRecord

app = typer.Typer(
    help="Workerpools: the workers (wallet addresses) allowed to claim and run a pool's "
    "tasks. Each membership change is a new record signed by the pool's owner and sent to "
    "the hub and the sms, so a hub can neither add a worker nor keep a removed one.",
    no_args_is_help=True,
)

Pool = Annotated[
    str, typer.Argument(metavar="POOL", help="The workerpool's address (or its name).")
]
Worker = Annotated[str, typer.Argument(metavar="ADDRESS", help="The worker's wallet address.")]


@app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The workerpool's name.")],
    requesters: Annotated[
        list[str] | None,
        typer.Option(
            "--requester",
            metavar="ADDR",
            help="Only this requester may submit tasks to it; repeat for several. Default: anyone.",
        ),
    ] = None,
    hub: HubOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a workerpool owned by your wallet (you are its first member); add workers
    with `confide workerpool add-worker POOL ADDRESS`."""
    from confide.client.deploy import deploy_workerpool  # noqa: PLC0415

    where = platform(hub, None, sms, wallet, password, signing=True)
    signed, _ = deploy_workerpool(where, where.signer(), name, requesters or None)
    record = signed.record
    if json_out:
        emit_json({"address": record.address, "name": record.name, "owner": record.owner})
        return
    say(record.address)
    note(f"workerpool {record.name!r} deployed; members: {record.owner}")


@app.command("show")
def show(pool: Pool, hub: HubOption = None, json_out: JsonOption = False) -> None:
    """Show a workerpool: its members and who may submit to it (signature checked here)."""
    print_view(verified_view(platform(hub, None, None), "workerpool", pool), json_out)


@app.command("list")
def list_pools(
    owner: Annotated[
        str | None, typer.Option("--owner", metavar="A", help="Only this owner's pools.")
    ] = None,
    hub: HubOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the workerpools the hub knows (with --json: a JSON list)."""
    print_list(platform(hub, None, None), "workerpool", owner, json_out)


@app.command("add-worker")
def add_worker(
    pool: Pool,
    worker: Worker,
    hub: HubOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add a worker to your workerpool (a new member set, signed, sent to hub and sms)."""
    _change(pool, hub, sms, wallet, password, json_out, add=worker)


@app.command("remove-worker")
def remove_worker(
    pool: Pool,
    worker: Worker,
    hub: HubOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Remove a worker from your workerpool: it can no longer claim its tasks, and the sms
    releases nothing to it for them."""
    _change(pool, hub, sms, wallet, password, json_out, remove=worker)


def _change(
    pool: str,
    hub: str | None,
    sms: str | None,
    wallet: Any,
    password: str | None,
    json_out: bool,
    *,
    add: str = "",
    remove: str = "",
) -> None:
    from confide.client.deploy import change_members  # noqa: PLC0415
    from confide.client.orders import resolve  # noqa: PLC0415

    where = platform(hub, None, sms, wallet, password, signing=True)
    signer = where.signer()
    address = resolve(where, "workerpool", pool, signer.address)
    signed, _ = change_members(where, signer, address, add=add, remove=remove)
    _report(signed, json_out)


def _report(signed: SignedRecord, json_out: bool) -> None:
    record = signed.record
    members = sorted(record.members)
    if json_out:
        emit_json({"address": record.address, "members": members, "sequence": record.sequence})
        return
    say(f"workerpool {record.address} members: {', '.join(members)}")
