"""The bubblewrap command line for a SandboxSpec.

bubblewrap builds the root (an empty tmpfs, made read-only at the end) from the layout's
operations, enters every namespace, drops to the sandbox uid and loads the seccomp
filter. It is never given ``--dev``: that option makes bubblewrap map root first and
then cover parts of /proc with read-only binds, and a /proc with covered parts cannot be
mounted again by a nested sandbox ("Can't mount proc ... Operation not permitted"); the
few device nodes are bound one by one instead.

Inside, two small wrappers from the system run before the command: ``prlimit`` sets the
rlimits in the sandbox (so they bound the sandbox's own processes, counted in its own
user namespace), and ``env -u PWD`` undoes the one variable bubblewrap adds, so the
command's environment is exactly ``spec.env``. Every option, the environment included,
reaches bubblewrap through ``--args FD`` (a memfd), never its command line or its own
environment: other users cannot read the values from /proc, and nothing in ``spec.env``
(LD_PRELOAD…) can change how bubblewrap itself runs on the host.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from confide.sandbox.layout import Op, rlimits
from confide.sandbox.spec import SandboxError, SandboxSpec

NAMESPACES = (
    "--unshare-user",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup",
)


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]
    pass_fds: list[int] = field(default_factory=list)
    own_fds: list[int] = field(default_factory=list)  # to close once the process started


def executable() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def _data_fd(data: bytes, name: str) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def inner_command(spec: SandboxSpec) -> list[str]:
    limits = rlimits(spec.limits)
    wrapper = [
        "/usr/bin/prlimit",
        f"--as={limits['RLIMIT_AS']}",
        f"--nproc={limits['RLIMIT_NPROC']}",
        f"--fsize={limits['RLIMIT_FSIZE']}",
        "--core=0",
        "--",
        "/usr/bin/env",
        "-u",
        "PWD",
        "--",
    ]
    if "PWD" in spec.env:  # bubblewrap sets its own; put back the spec's
        wrapper.append(f"PWD={spec.env['PWD']}")
    return [*wrapper, *spec.argv]


OPTIONS = {"ro": "--ro-bind", "rw": "--bind", "dev": "--dev-bind", "symlink": "--symlink"}


def _op_args(op: Op) -> list[str]:
    if op.kind in OPTIONS:
        return [OPTIONS[op.kind], op.source, op.target]
    if op.kind == "tmpfs":
        return ["--size", str(op.size), "--tmpfs", op.target]
    if op.kind in ("dir", "proc"):
        return [f"--{op.kind}", op.target]
    raise SandboxError(f"unknown layout operation {op.kind}")


def command(spec: SandboxSpec, ops: list[Op], uid: int, gid: int, seccomp: bytes | None) -> Command:
    binary = executable()
    if binary is None:
        raise SandboxError("bubblewrap (bwrap) is not installed")
    cmd = Command([binary], {})
    args = [*NAMESPACES, "--clearenv"]
    for key, value in spec.env.items():
        args += ["--setenv", key, value]
    args += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    args += ["--uid", str(uid), "--gid", str(gid), "--cap-drop", "ALL"]
    if not spec.allows_nesting:
        args.append("--disable-userns")
    if seccomp is not None:
        fd = _data_fd(seccomp, "confide-seccomp")
        cmd.pass_fds.append(fd)
        cmd.own_fds.append(fd)
        args += ["--seccomp", str(fd)]
    for op in ops:
        if op.kind == "data":
            fd = _data_fd(op.data, "confide-file")
            cmd.pass_fds.append(fd)
            cmd.own_fds.append(fd)
            args += ["--perms", "0644", "--ro-bind-data", str(fd), op.target]
        else:
            args += _op_args(op)
    args += ["--remount-ro", "/", "--chdir", spec.cwd]
    fd = _data_fd(b"".join(arg.encode() + b"\0" for arg in args), "confide-args")
    cmd.pass_fds.append(fd)
    cmd.own_fds.append(fd)
    cmd.argv += ["--args", str(fd), "--", *inner_command(spec)]
    return cmd
