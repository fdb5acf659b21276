"""Compute: the app's iExec environment and its run in a nested sandbox.

The environment is iExec's, and nothing else of the runtime's: ``IEXEC_IN``,
``IEXEC_OUT``, ``IEXEC_TASK_ID``, ``IEXEC_DATASET_FILENAME`` (with a dataset),
``IEXEC_INPUT_FILES_NUMBER``, ``IEXEC_INPUT_FILE_NAME_i``, ``IEXEC_APP_DEVELOPER_SECRET``
(and ``_1``), ``IEXEC_REQUESTER_SECRET_k`` for each mapped index (gaps skipped), plus
``PATH``, ``HOME`` (its /tmp) and ``LANG``. The app sees its bundle read-only at
``/app``, ``IEXEC_IN`` read-only at ``/iexec_in``, ``IEXEC_OUT`` writable at
``/iexec_out`` (on the runtime's own size-bounded tmpfs), a bounded ``/tmp``, no network,
its own uid, and is killed with its whole process tree at the job's deadline.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from confide.runtime.job import Job
from confide.runtime.precompute import Bundle
from confide.runtime.stages import APP_COMPUTE_FAILED, APP_COMPUTE_TIMEOUT, TaskFailure
from confide.sandbox import (
    Finished,
    Limits,
    Mount,
    SandboxError,
    SandboxSpec,
    run_in_given_kind,
)

APP_TARGET = "/app"
IN_TARGET = "/iexec_in"
OUT_TARGET = "/iexec_out"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
APP_PROCESSES = 64
APP_FILE_BYTES = 256 << 20
POST_COMPUTE_RESERVE = 10.0  # seconds kept before the deadline to deliver the result
_RELEASED = re.compile(
    r"IEXEC_TASK_ID|IEXEC_APP_DEVELOPER_SECRET(_1)?|IEXEC_REQUESTER_SECRET_[1-9][0-9]{0,3}"
)
SECRET_NAMES = re.compile(r"IEXEC_APP_DEVELOPER_SECRET(_1)?|IEXEC_REQUESTER_SECRET_[0-9]+")


def app_environment(
    job: Job, released: Mapping[str, object], dataset: str | None, inputs: list[str]
) -> dict[str, str]:
    """The app's whole environment (secret values included: never print it)."""
    env = {"PATH": SYSTEM_PATH, "HOME": "/tmp", "LANG": "C.UTF-8"}  # noqa: S108 (its own tmpfs)
    for name, value in released.items():
        if _RELEASED.fullmatch(name) and isinstance(value, str):
            env[name] = value
    if env.get("IEXEC_TASK_ID") != job.task:
        raise TaskFailure(APP_COMPUTE_FAILED, "the released configuration is for another task")
    env["IEXEC_IN"], env["IEXEC_OUT"] = IN_TARGET, OUT_TARGET
    if dataset is not None:
        env["IEXEC_DATASET_FILENAME"] = dataset
    env["IEXEC_INPUT_FILES_NUMBER"] = str(len(inputs))
    for index, name in enumerate(inputs, start=1):
        env[f"IEXEC_INPUT_FILE_NAME_{index}"] = name
    return env


def app_argv(bundle: Bundle, args: list[str]) -> tuple[str, ...]:
    """``python3 /app/<entrypoint>``, ``node /app/<entrypoint>`` or the native binary."""
    entrypoint = f"{APP_TARGET}/{bundle.manifest.entrypoint}"
    runtime = bundle.manifest.runtime
    if runtime == "native":
        return (entrypoint, *args)
    program = {"python": "python3", "node": "node"}.get(runtime)
    found = shutil.which(program, path=SYSTEM_PATH) if program else None
    if found is None:
        raise TaskFailure(APP_COMPUTE_FAILED, f"no {runtime} interpreter here for the app")
    return (found, entrypoint, *args)


def run_app(
    job: Job,
    bundle: Bundle,
    in_dir: Path,
    out_dir: Path,
    env: dict[str, str],
    argv: tuple[str, ...],
) -> Finished:
    """Run the app in its sandbox until it ends or the deadline (less a reserve for
    post-compute: the worker stops the runtime itself at the deadline); :func:`judge`
    says whether that is a failure. No working sandbox is APP_COMPUTE_FAILED."""
    remaining = job.deadline - time.time()
    remaining -= min(POST_COMPUTE_RESERVE, remaining * 0.1)
    if remaining <= 0:
        raise TaskFailure(APP_COMPUTE_TIMEOUT, "the task's deadline passed before the app started")
    spec = SandboxSpec(
        argv=argv,
        env=env,
        limits=Limits(
            wall_seconds=remaining,
            memory_bytes=job.memory_bytes,
            processes=APP_PROCESSES,
            file_bytes=APP_FILE_BYTES,
            tmpfs_bytes=job.tmpfs_bytes,
        ),
        mounts=(
            Mount(bundle.root, APP_TARGET),
            Mount(in_dir, IN_TARGET),
            Mount(out_dir, OUT_TARGET, writable=True),
        ),
        tmpfs=("/tmp",),  # noqa: S108 (the app's own, size-bounded)
        cwd=APP_TARGET,
    )
    try:
        return run_in_given_kind(spec)
    except SandboxError as exc:
        raise TaskFailure(APP_COMPUTE_FAILED, f"no working sandbox for the app: {exc}") from None


def judge(finished: Finished) -> TaskFailure | None:
    """The failure a finished app run is, if any."""
    if finished.timed_out:
        return TaskFailure(
            APP_COMPUTE_TIMEOUT, "the app ran past the task's deadline and was stopped"
        )
    if finished.exit_code != 0:
        why = finished.reason or f"exit {finished.exit_code}"
        return TaskFailure(APP_COMPUTE_FAILED, f"the app failed ({why})")
    return None
