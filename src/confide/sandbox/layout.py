"""The sandbox's file system as a list of operations, the same for every backend.

The root is an empty tmpfs (made read-only once built); onto it go the read-only system
allowlist, a few device nodes, a fresh /proc, this Python when asked, the size-bounded
tmpfs and the spec's own mounts. Nothing else of the host is visible: not $HOME, not
$CONFIDE_HOME, not the caller's working directory — unless a Mount names it.
"""

from __future__ import annotations

import functools
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import confide
from confide.sandbox.spec import Limits, SandboxError, SandboxSpec, sandbox_target

SYSTEM_TOP = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
SYSTEM_ETC = (
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/mime.types",
    "/etc/debian_version",
    "/etc/os-release",
)
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEV_LINKS = {
    "/dev/fd": "/proc/self/fd",
    "/dev/stdin": "/proc/self/fd/0",
    "/dev/stdout": "/proc/self/fd/1",
    "/dev/stderr": "/proc/self/fd/2",
}
WRAPPERS = ("/usr/bin/prlimit", "/usr/bin/env")  # limits and an exact environment
DEV_TMPFS_BYTES = 64 << 10


@dataclass(frozen=True)
class Op:
    """One step: ``ro``/``rw``/``dev`` bind ``source`` at ``target``; ``tmpfs`` of ``size``;
    ``symlink`` ``target`` -> ``source``; ``dir``; ``proc``; ``data`` (file content)."""

    kind: str
    target: str
    source: str = ""
    size: int = 0
    data: bytes = b""


def rlimits(limits: Limits) -> dict[str, int]:
    """The rlimits of the sandboxed processes, each lowered to this process's own hard
    limit (an unprivileged process cannot raise it: a nested sandbox gets at most what
    its parent sandbox has)."""
    wanted = {
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_NPROC": limits.processes,
        "RLIMIT_FSIZE": limits.file_bytes,
        "RLIMIT_CORE": 0,
    }
    result = {}
    for name, value in wanted.items():
        hard = resource.getrlimit(getattr(resource, name))[1]
        result[name] = value if hard == resource.RLIM_INFINITY else min(value, hard)
    return result


def sandbox_ids() -> tuple[int, int]:
    """The uid and gid inside: 1000, or 1001 when the caller already is 1000."""
    uid = 1001 if os.getuid() == 1000 else 1000
    gid = 1001 if os.getgid() == 1000 else 1000
    return uid, gid


def _system_ops() -> list[Op]:
    ops = []
    for path in SYSTEM_TOP + SYSTEM_ETC:
        if os.path.islink(path):
            ops.append(Op("symlink", path, source=os.readlink(path)))
        elif os.path.exists(path):
            ops.append(Op("ro", path, source=path))
    return ops


@functools.cache
def _wrapper_closure() -> tuple[str, ...]:
    """The wrapper binaries and the shared libraries they load (for system=False)."""
    files = set(WRAPPERS)
    for binary in WRAPPERS:
        try:
            out = subprocess.run(
                ["ldd", binary], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as error:
            raise SandboxError(f"cannot list the libraries of {binary}: {error}") from error
        for line in out.splitlines():
            for word in line.split():
                if word.startswith("/") and os.path.exists(word):
                    files.add(word)
    return tuple(sorted(files))


def interpreter_paths() -> list[str]:
    """Directories this Python needs: its prefixes (and their real paths) and the
    directory holding the confide package."""
    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        str(Path(confide.__file__).resolve().parent.parent),
    }
    for path in list(candidates):
        candidates.add(os.path.realpath(path))
    exposed = [os.path.expanduser("~"), os.environ.get("CONFIDE_HOME", ""), os.getcwd()]
    chosen: list[str] = []
    for path in sorted(candidates, key=len):
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in chosen):
            continue  # inside a directory already chosen
        for secret in filter(None, exposed):
            real = os.path.realpath(secret)
            if real == path or real.startswith(path.rstrip("/") + "/"):
                raise SandboxError(
                    f"interpreter=True would expose {secret} (this Python or the confide "
                    f"package lives at {path}, which holds it); install confide elsewhere"
                )
        chosen.append(path)
    return chosen


def plan(spec: SandboxSpec, uid: int, gid: int) -> list[Op]:
    """The operations that build the root of ``spec``, parents before children."""
    ops: list[Op] = []
    if spec.system:
        ops += _system_ops()
    else:
        ops += [Op("ro", path, source=path) for path in _wrapper_closure()]
    ops.append(Op("tmpfs", "/dev", size=DEV_TMPFS_BYTES))
    ops += [Op("dev", path, source=path) for path in DEVICES if os.path.exists(path)]
    ops += [Op("symlink", link, source=to) for link, to in DEV_LINKS.items()]
    ops.append(Op("proc", "/proc"))
    passwd = f"root:x:0:0:root:/:/bin/false\nsandbox:x:{uid}:{gid}:sandbox:/:/bin/false\n"
    group = f"root:x:0:\nsandbox:x:{gid}:\n"
    hosts = "127.0.0.1 localhost\n::1 localhost\n"
    ops += [
        Op("data", "/etc/passwd", data=passwd.encode()),
        Op("data", "/etc/group", data=group.encode()),
        Op("data", "/etc/hosts", data=hosts.encode()),
        Op("data", "/etc/hostname", data=b"sandbox\n"),
    ]
    covered = [op.target for op in ops if op.kind in ("ro", "symlink")]
    own: list[Op] = [
        Op("tmpfs", sandbox_target(path, "tmpfs"), size=spec.limits.tmpfs_bytes)
        for path in spec.tmpfs
    ]
    if spec.interpreter:  # sorted with the tmpfs below: a venv under /tmp stays visible
        for path in interpreter_paths():
            if not any(path == c or path.startswith(c + "/") for c in covered):
                own.append(Op("ro", path, source=path))
    for mount in spec.mounts:
        kind = "rw" if mount.writable else "ro"
        source = os.path.realpath(mount.source)
        own.append(Op(kind, sandbox_target(mount.target, "mount target"), source=source))
    own.sort(key=lambda op: op.target.count("/"))
    ops += own
    nested_base = "/tmp"  # noqa: S108 - where a nested bubblewrap builds its root
    if spec.allows_nesting and not any(op.target == nested_base for op in ops):
        ops.append(Op("dir", nested_base))
    return ops
