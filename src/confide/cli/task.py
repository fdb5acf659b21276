"""``confide task``: follow and cancel the tasks your orders queued."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from confide.cli.options import HubOption, SmsOption, platform
from confide.cli.output import JsonOption, emit_json, note, say
from confide.cli.wallet import PasswordOption, WalletOption, address_or_own
from confide.errors import ConfideError

app = typer.Typer(
    help="Tasks: what `confide app run` queued. Statuses: RECEIVED, CLAIMED, PRE_COMPUTE, "
    "ATTESTING, COMPUTING, POST_COMPUTE, UPLOADING, then COMPLETED, FAILED (with a cause) "
    "or TIMEOUT.",
    no_args_is_help=True,
)

Task = Annotated[str, typer.Argument(metavar="TASK", help="The task id (0x and 64 hex).")]
_SHOWN = ("status", "cause", "app", "workerpool", "dataset", "category", "attempts")


@app.command("show")
def show(task: Task, hub: HubOption = None, json_out: JsonOption = False) -> None:
    """Show a task: its status and cause, workerpool, attempts, deadline, result digest."""
    view = _task(platform(hub, None, None), task)
    if json_out:
        emit_json(view)
        return
    say(f"task {view.get('task', task)}")
    for key in (*_SHOWN, "max_attempts", "deadline", "valid_until", "result_digest"):
        if view.get(key) is not None:
            say(f"  {key:<14} {view[key]}")


@app.command("list")
def list_tasks(
    status: Annotated[
        str | None, typer.Option("--status", metavar="S", help="Only tasks in this status.")
    ] = None,
    requester: Annotated[
        str | None,
        typer.Option("--requester", metavar="A", help="Whose tasks (default: your wallet's)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    hub: HubOption = None,
    wallet: WalletOption = None,
    json_out: JsonOption = False,
) -> None:
    """List your tasks, newest first (with --json: a JSON list)."""
    who = address_or_own(requester, wallet)
    tasks = platform(hub, None, None).hub.tasks(
        requester=who, status=status.upper() if status else None, limit=limit
    )
    if json_out:
        emit_json(tasks)
        return
    if not tasks:
        say(f"no tasks of {who}" + (f" in status {status.upper()}" if status else ""))
    for view in tasks:
        cause = f" ({view['cause']})" if view.get("cause") else ""
        say(f"{view.get('task')}  {view.get('status')}{cause}  app {view.get('app')}")


@app.command("cancel")
def cancel(
    task: Task,
    hub: HubOption = None,
    sms: SmsOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Cancel a task of yours before it completes: signed and sent to the sms (which then
    refuses any release for it, whatever the hub does) and to the hub (which fails it
    with cause CANCELLED_BY_REQUESTER)."""
    from confide.client.known import recall_order  # noqa: PLC0415
    from confide.sms.tasks import TaskOrder  # noqa: PLC0415

    where = platform(hub, None, sms, wallet, password, signing=True)
    # The order as this user signed it at `app run` when it is kept here: a hub that
    # withholds the task cannot keep the cancel from the sms.
    kept = None
    if where.records_dir is not None:
        kept = recall_order(where.records_dir.parent / "orders", task.lower())
    view: dict[str, Any] = {} if kept is not None else _task(where, task)
    if kept is not None:
        order, signature = kept
    else:
        order = TaskOrder.from_json(view.get("order"))
        signature = str(view.get("signature", ""))
    order.check_signature(signature)  # the order its requester signed
    me = where.signer().address
    if order.requester != me:
        raise ConfideError(f"task {task} is {order.requester}'s: only its requester cancels it")
    if order.task_id() != task.lower():
        raise ConfideError(f"the hub answered task {task} with the order of {order.task_id()}")
    where.sms.cancel_task(order, signature)
    if kept is not None:
        view = where.hub.task(task) or {}  # the hub's status, if it tells it
    status = str(view.get("status"))
    hub_answer: dict[str, Any] = {}
    if status in {"COMPLETED", "FAILED", "TIMEOUT"}:
        note(f"task {task} is already {status} at the hub; the sms refuses any release for it")
    else:
        hub_answer = where.hub.cancel_task(task)
        status = str(hub_answer.get("status", "FAILED"))
    if json_out:
        emit_json({"task": task.lower(), "status": status, "cancelled": True})
        return
    say(f"task {task.lower()} cancelled ({status}); the sms releases nothing more for it")


def _task(where: Any, task: str) -> dict[str, Any]:
    view: dict[str, Any] | None = where.hub.task(task)
    if view is None:
        raise ConfideError(f"the hub at {where.hub.base_url} knows no task {task}")
    return view
