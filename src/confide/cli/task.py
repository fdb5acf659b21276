"""``confide task``: follow, download, debug and cancel the tasks your orders queued.

What a task view holds comes from the hub, the worker or the app (an error text, the
app's logs): none of it is trusted to drive the terminal. Text output escapes every
control or format character (ANSI/OSC escapes, bidi overrides, …) but newline and tab;
``--json`` output is JSON-escaped anyway.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from confide.cli.options import HubOption, SmsOption, StorageOption, platform
from confide.cli.output import JsonOption, emit_json, note, say, warn
from confide.cli.result import default_key_path
from confide.cli.wallet import PasswordOption, WalletOption, address_or_own
from confide.errors import ConfideError
from confide.hub.lifecycle import CHAIN

app = typer.Typer(
    help="Tasks: what `confide app run` queued. Statuses: RECEIVED, CLAIMED, PRE_COMPUTE, "
    "ATTESTING, COMPUTING, POST_COMPUTE, UPLOADING, then COMPLETED, FAILED (with a cause) "
    "or TIMEOUT.",
    no_args_is_help=True,
)

Task = Annotated[str, typer.Argument(metavar="TASK", help="The task id (0x and 64 hex).")]
_LIFECYCLE = (*CHAIN, "FAILED", "TIMEOUT")
_SHOWN = ("status", "cause", "app", "workerpool", "dataset", "category", "attempts")


DownloadOption = Annotated[
    Path | None,
    typer.Option(
        "--download",
        metavar="DIR",
        help="Fetch the result into DIR: keep the stored zip as DIR/TASK.zip and the result "
        "document as DIR/TASK.json, verify them (as `confide result verify` does), then "
        "decrypt with $CONFIDE_HOME/result-key and extract into DIR. A result that fails "
        "verification stays encrypted (exit 1).",
    ),
]


@app.command("show")
def show(
    task: Task,
    download: DownloadOption = None,
    hub: HubOption = None,
    storage: StorageOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a task: its status and cause, workerpool, attempts, deadline, the time of each
    status it went through, its result digest; with --download, fetch its result."""
    if download is None:
        view = _task(platform(hub, None, None), task)
        _show(view, task, [], json_out)
        return
    from confide.results.fetch import checked_task, download_result  # noqa: PLC0415

    checked_task(task)
    where = platform(hub, storage, None, wallet, password, signing=True)
    view = _task(where, task)
    fetched = download_result(
        where, task, view, download, key_path=default_key_path(), now=int(time.time())
    )
    paths = [str(p) for p in fetched.downloaded]
    verdict = fetched.verdict
    if not verdict.ok:
        message = (
            f"the result of task {task} failed verification ({verdict.reason()}): kept "
            f"encrypted in {download}, not extracted"
        )
        if not json_out:
            _show(view, task, paths, False)
            raise ConfideError(message)
        emit_json({**_summary(view, paths), "verified": False, "verdict": verdict.to_json()})
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)
    if verdict.simulation:
        warn(
            "the result comes from a simulated TEE (your order allowed it): no hardware protection"
        )
    if fetched.kept_encrypted:
        note(fetched.kept_encrypted)
    if json_out:
        emit_json(
            {
                **_summary(view, paths),
                "verified": True,
                "simulation": verdict.simulation,
                "outcome": verdict.outcome,
            }
        )
        return
    _show(view, task, paths, False)
    say("result verified" + (" (simulation)" if verdict.simulation else ""))
    if verdict.task_failed:
        cause = (verdict.outcome or "").removeprefix("failed:")
        say(
            f"the task failed ({cause}, signed by the enclave): its result holds only "
            f"error.txt, which says why"
        )


def _summary(view: dict[str, Any], downloaded: list[str]) -> dict[str, Any]:
    return {
        "task": view.get("task"),
        "status": view.get("status"),
        "cause": view.get("cause"),
        "result_digest": _result_digest(view),
        "times": view.get("times") or {},
        "downloaded": downloaded,
    }


def _result_digest(view: dict[str, Any]) -> Any:
    result = view.get("result")
    if view.get("result_digest") is None and isinstance(result, dict):
        return result.get("blob")
    return view.get("result_digest")


def _show(view: dict[str, Any], task: str, downloaded: list[str], json_out: bool) -> None:
    if json_out:  # the whole view, with the summary's keys
        emit_json({**view, **_summary(view, downloaded)})
        return
    say(f"task {printable(view.get('task', task))}")
    for key in (*_SHOWN, "max_attempts", "deadline", "valid_until"):
        if view.get(key) is not None:
            say(f"  {key:<14} {printable(view[key])}")
    if _result_digest(view) is not None:
        say(f"  {'result_digest':<14} {printable(_result_digest(view))}")
    times = view.get("times") or {}
    order = {status: index for index, status in enumerate(_LIFECYCLE)}
    for status, at in sorted(times.items(), key=lambda item: (order.get(item[0], 99), item[0])):
        say(f"  {printable(status):<14} at {printable(at)}")
    for path in downloaded:
        say(f"  downloaded     {printable(path)}")


def printable(value: object) -> str:
    """``value``'s text with every control or format character escaped (``\\x1b``,
    ``\\u202e``…) but newline and tab: untrusted text never drives the terminal."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


@app.command("debug")
def debug(
    task: Task,
    logs: Annotated[
        bool,
        typer.Option(
            "--logs",
            help="Also fetch the task's logs (last 100 kB of stdout and stderr, sealed to "
            "your result key) when the app's owner lets logs reach requesters.",
        ),
    ] = False,
    hub: HubOption = None,
    storage: StorageOption = None,
    wallet: WalletOption = None,
    password: PasswordOption = None,
    json_out: JsonOption = False,
) -> None:
    """Why a task of yours failed (requester only): status, cause, attempts, the time of
    each status, the error the enclave reported; with --logs, the app's logs (opened only
    once the sms's token and the enclave's statement verify and the statement signs their
    digest)."""
    from confide.results.fetch import checked_task  # noqa: PLC0415
    from confide.results.logs import verified_logs  # noqa: PLC0415
    from confide.sms.tasks import TaskOrder  # noqa: PLC0415

    checked_task(task)
    where = platform(hub, storage, None, wallet, password, signing=True)
    view = _task(where, task)
    order = TaskOrder.from_json(view.get("order"))
    order.check_signature(str(view.get("signature", "")))  # the hub cannot make one up
    me = where.signer().address
    if order.requester != me:
        raise ConfideError(f"task {task} is {order.requester}'s: only its requester debugs it")
    if order.task_id() != task.lower():
        raise ConfideError(f"the hub answered task {task} with the order of {order.task_id()}")
    result = view.get("result") if isinstance(view.get("result"), dict) else {}
    text = None
    if logs:
        opened = verified_logs(where, task, view, default_key_path(), now=int(time.time()))
        text = opened.decode("utf-8", "replace")
    document = {
        "task": view.get("task"),
        "status": view.get("status"),
        "cause": view.get("cause"),
        "attempts": view.get("attempts"),
        "max_attempts": view.get("max_attempts"),
        "times": view.get("times") or {},
        "lease": view.get("lease"),
        "error": (result or {}).get("error"),
        "logs": text,
    }
    if json_out:
        emit_json(document)
        return
    _show(view, task, [], False)
    if document["error"]:
        say(f"  error          {printable(document['error'])}")
    if text is not None:
        say("--- logs (stdout and stderr, last 100 kB; secrets redacted) ---")
        shown = printable(text)
        sys.stdout.write(shown if shown.endswith("\n") or not shown else shown + "\n")


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
        say(printable(f"{view.get('task')}  {view.get('status')}{cause}  app {view.get('app')}"))


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
