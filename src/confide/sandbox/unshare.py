"""The util-linux ``unshare`` backend: namespaces from ``unshare``, the root from _stage2.

Used where bubblewrap is missing or does not work. ``unshare`` creates every namespace
(user, mount, pid, net, ipc, uts, cgroup) and kills its child when it dies;
``_stage2.py`` (standard library only, run by this Python with ``-I -S``) builds the
same layout as bubblewrap does and execs the command (see its docstring). Its
instructions, the environment included, arrive through a memfd, never on a command line.
The new network namespace's loopback is left down: no network at all.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from confide.sandbox.bwrap import Command, _data_fd
from confide.sandbox.layout import Op, rlimits
from confide.sandbox.spec import SandboxError, SandboxSpec

STAGE2 = Path(__file__).with_name("_stage2.py")
FLAGS = (
    "--user",
    "--map-root-user",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child",
    "--net",
    "--ipc",
    "--uts",
    "--cgroup",
    "--propagation",
    "private",
)


def executable() -> str | None:
    return shutil.which("unshare", path="/usr/bin:/bin:/usr/local/bin")


def command(
    spec: SandboxSpec, ops: list[Op], uid: int, gid: int, seccomp: bytes | None
) -> tuple[Command, str]:
    """The command, and the empty directory its root is mounted on (remove it after)."""
    binary = executable()
    if binary is None:
        raise SandboxError("unshare (util-linux) is not installed")
    root = tempfile.mkdtemp(prefix="confide-root-")
    config = {
        "root": root,
        "ops": [
            {"kind": op.kind, "target": op.target, "source": op.source, "size": op.size}
            | {"data": op.data.hex()}
            for op in ops
        ],
        "uid": uid,
        "gid": gid,
        "nesting": spec.allows_nesting,
        "rlimits": rlimits(spec.limits),
        "cwd": spec.cwd,
        "seccomp": seccomp.hex() if seccomp is not None else "",
        "pass_fds": list(spec.pass_fds),
        "argv": list(spec.argv),
        "env": dict(spec.env),
    }
    fd = _data_fd(json.dumps(config).encode(), "confide-stage2")
    python = os.path.realpath(sys.executable)
    argv = [binary, *FLAGS, "--", python, "-I", "-S", str(STAGE2), str(fd)]
    return Command(argv, {}, pass_fds=[fd], own_fds=[fd]), root
