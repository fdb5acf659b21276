"""Cgroups per run, where the caller may make them: the process and memory bounds that
hold for the whole tree, even when the caller is root.

RLIMIT_NPROC bounds the sandbox's processes (they are counted in its own user
namespace), but the kernel does not apply it to processes whose real user is the host's
root; and RLIMIT_AS bounds each process, not the tree (64 processes of 2 GiB each, or a
tmpfs filled in memory, are far more than one). So where this process's cgroups are
writable, each run gets a child cgroup of each controller it can use:

- ``pids``: ``pids.max`` = ``limits.processes``;
- ``memory``: the tree's memory (its processes' pages, and the pages of the tmpfs it
  writes) at most ``limits.memory_bytes``, swap included (v1
  ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``; v2 ``memory.max`` and
  ``memory.swap.max`` = 0); past it the kernel's OOM killer ends a process of the tree.

Both cgroup v1 (a hierarchy per controller) and v2 (one hierarchy, the controller
enabled for children) are read from ``/proc/self/cgroup``. The backend joins every group
before it starts (a ``sh`` shim writes its own pid to each ``cgroup.procs``, then execs
the backend, so nothing forks outside); after the run every process left is killed and
the groups removed. A nested sandbox (the app inside the runtime's) stays in its
parent's groups: the runtime's bounds are then the whole task's. Where no cgroup is
writable (an unprivileged worker, or inside a sandbox) rlimits alone apply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# $1: how many cgroup.procs paths follow; the shim joins each, then execs the rest
SHIM = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; '
    'n=$((n - 1)); done; exec "$@"'
)


def _own_dir(controller: str) -> Path | None:
    """This process's cgroup directory for ``controller`` (v1 or v2), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    for line in lines:
        if line.startswith("0::"):
            base = CGROUP_ROOT / line[3:].lstrip("/")
            with contextlib.suppress(OSError):
                if controller in (base / "cgroup.subtree_control").read_text().split():
                    return base
    return None


@dataclass(frozen=True)
class _Setting:
    file: str
    value: str
    required: bool = True  # False: written where the kernel offers it (swap accounting)


def _settings(controller: str, base: Path, processes: int, memory: int) -> list[_Setting]:
    if controller == "pids":
        return [_Setting("pids.max", str(processes))]
    if (base / "memory.limit_in_bytes").exists():  # v1: the memory limit first, then swap
        return [
            _Setting("memory.limit_in_bytes", str(memory)),
            _Setting("memory.memsw.limit_in_bytes", str(memory), required=False),
        ]
    return [_Setting("memory.max", str(memory)), _Setting("memory.swap.max", "0", False)]


class RunGroups:
    """One run's cgroups; :meth:`create` returns None where none can be made."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    @classmethod
    def create(cls, processes: int, memory_bytes: int) -> RunGroups | None:
        made: list[Path] = []
        name = f"confide-sandbox-{os.urandom(8).hex()}"  # (uuid imports platform: 5 ms a task)
        for controller in ("pids", "memory"):
            parent = _own_dir(controller)
            if parent is None or not os.access(parent, os.W_OK):
                continue
            path = parent / name
            if path in made:  # v2: one directory holds both controllers
                continue
            try:
                path.mkdir()
            except OSError:
                continue
            try:
                for setting in _settings(controller, path, processes, memory_bytes):
                    try:
                        (path / setting.file).write_text(setting.value)
                    except OSError:
                        if setting.required:
                            raise
            except OSError:
                RunGroups([path]).remove()
                continue
            made.append(path)
        return cls(made) if made else None

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside these cgroups."""
        procs = [str(path / "cgroup.procs") for path in self.paths]
        return ["/bin/sh", "-c", SHIM, "sh", str(len(procs)), *procs, *argv]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.paths:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def out_of_memory(self) -> bool:
        """Whether the kernel's OOM killer acted in the run's memory group."""
        for path in self.paths:
            for name in ("memory.events", "memory.oom_control"):
                with contextlib.suppress(OSError):
                    for line in (path / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill" and value.strip() not in ("", "0"):
                            return True
        return False

    def remove(self) -> None:
        """Kill whatever is left in the groups, then remove them."""
        for path in self.paths:
            for _ in range(100):
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # dying processes leave the cgroup a moment later
