"""How the worker starts the enclave runtime: ``python -m confide.runtime /job
--wait-job FD`` inside the sandbox (:func:`confide.sandbox.run`), which sees the job
directory (read-write, at ``/job``), this Python and the confide package (read-only),
the system allowlist, and the relay's file descriptor FD; nothing of the worker's home,
wallet or keys. It is started before its task is claimed (pre-warmed,
:mod:`confide.worker.prewarm`): the runtime imports what it needs, then asks the relay
for its job and waits.

:class:`Runner` is the seam tests use to put a fake runtime in its place; the command
line offers no other runner, so a worker never starts a runtime unconfined.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

JOB_TARGET = "/job"
RUNTIME_MEMORY_BYTES = 4 << 30  # the runtime's own address space (the app's is in job.json)
RUNTIME_PROCESSES = 256
RUNTIME_FILE_BYTES = 2 << 30  # the largest file it writes (a result archive)
# The runtime's own /tmp holds the plaintext of a job (bundle, inputs, decrypted dataset,
# IEXEC_OUT, the inner archive): this bounds them all together.
RUNTIME_TMPFS_BYTES = 1 << 30
# The runtime stops the app a little before the deadline to archive, seal and sign; its
# sandbox's wall is the deadline and a few seconds more (the hub times the task out at
# the deadline whatever happens).
WALL_RESERVE_SECONDS = 5.0


@dataclass(frozen=True)
class RunOutcome:
    """How the runtime's process ended (never its output: it is not the worker's to read)."""

    exit_code: int | None
    timed_out: bool
    reason: str | None


# (job directory, the relay's fd for the runtime, wall seconds, cancel) -> how the runtime
# ended. It is started before the job is in the directory: the runtime asks the relay
# for it (``{"op": "job"}``). ``cancel`` set (the task's deadline, or the worker stops):
# the runtime and everything it started are killed.
Runner = Callable[[Path, int, float, threading.Event], RunOutcome]


@dataclass(frozen=True)
class SandboxRunner:
    """The runtime in the sandbox; ``kind``: "bwrap" or "unshare" (None: the best here)."""

    kind: str | None = None

    def __call__(
        self, job_dir: Path, relay_fd: int, wall_seconds: float, cancel: threading.Event
    ) -> RunOutcome:
        import sys  # noqa: PLC0415

        from confide.sandbox import (  # noqa: PLC0415
            KIND_VARIABLE,
            Limits,
            Mount,
            SandboxSpec,
            backend,
            run,
        )

        kind = self.kind or backend()

        spec = SandboxSpec(
            argv=(
                sys.executable,
                "-I",
                "-m",
                "confide.runtime",
                JOB_TARGET,
                "--wait-job",
                str(relay_fd),
            ),
            env={
                "PATH": "/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                # the kind the runtime runs in, so it runs the app in the same without
                # probing it first (a probe is one more sandbox per task)
                KIND_VARIABLE: kind,
            },
            limits=Limits(
                wall_seconds=max(1.0, wall_seconds),
                memory_bytes=RUNTIME_MEMORY_BYTES,
                processes=RUNTIME_PROCESSES,
                file_bytes=RUNTIME_FILE_BYTES,
                tmpfs_bytes=RUNTIME_TMPFS_BYTES,
            ),
            mounts=(Mount(job_dir, JOB_TARGET, writable=True),),
            cwd=JOB_TARGET,
            pass_fds=(relay_fd,),
            interpreter=True,
        )
        finished = run(spec, kind=kind, cancel=cancel)
        return RunOutcome(finished.exit_code, finished.timed_out, finished.reason)
