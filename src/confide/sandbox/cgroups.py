"""A pids cgroup per run, where the caller may make one: the process bound that holds
even when the caller is root.

RLIMIT_NPROC bounds the sandbox's processes (they are counted in its own user
namespace), but the kernel does not apply it to processes whose real user is the host's
root: a worker run as root would get no fork bound from rlimits alone. So when this
process's pids cgroup (v1 ``pids`` hierarchy or v2 with the ``pids`` controller enabled
for children) is writable, each run gets a child cgroup with ``pids.max`` set to
``limits.processes``; the backend joins it before it starts (a ``sh`` shim writes its own
pid, then execs the backend, so nothing forks outside), every process left in it is
killed after the run, and the cgroup is removed. Where no pids cgroup is writable (an
unprivileged worker, or inside a sandbox) rlimits alone apply, and they do hold there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SHIM = 'echo $$ > "$1" || exit 125; shift; exec "$@"'


def _own_pids_dir() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return CGROUP_ROOT / "pids" / path.lstrip("/")
    for line in lines:
        if line.startswith("0::"):
            base = CGROUP_ROOT / line[3:].lstrip("/")
            with contextlib.suppress(OSError):
                if "pids" in (base / "cgroup.subtree_control").read_text().split():
                    return base
    return None


class PidsGroup:
    """One run's pids cgroup; :meth:`create` returns None where none can be made."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, processes: int) -> PidsGroup | None:
        parent = _own_pids_dir()
        if parent is None or not os.access(parent, os.W_OK):
            return None
        path = parent / f"confide-sandbox-{uuid.uuid4().hex[:16]}"
        try:
            path.mkdir()
        except OSError:
            return None
        group = cls(path)
        try:
            (path / "pids.max").write_text(str(processes))
        except OSError:
            group.remove()
            return None
        return group

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside this cgroup."""
        return ["/bin/sh", "-c", SHIM, "sh", str(self.path / "cgroup.procs"), *argv]

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def remove(self) -> None:
        """Kill whatever is left in the cgroup, then remove it."""
        for _ in range(100):
            left = self.pids()
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)  # dying processes leave the cgroup a moment later
