"""What a sandboxed run is given (SandboxSpec) and what it returns (Finished).

The spec is a value: the backends (bubblewrap, util-linux ``unshare``) turn the same spec
into the same confinement, and :func:`validate` refuses a spec that could only be honoured
by weakening it (a relative mount target, a mount over ``/``, an argv[0] that a wrapper
would read as an assignment).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confide.errors import ConfideError

TAIL_BYTES = 100_000  # how much of stdout and of stderr a Finished keeps (the last bytes)


class SandboxError(ConfideError):
    """No working sandbox, or a spec or archive that cannot be honoured safely.

    confide never runs a process unconfined: when neither bubblewrap nor ``unshare``
    works here, :func:`confide.sandbox.run` raises this with the reason of each.
    """


@dataclass(frozen=True)
class Mount:
    """A host path shown at ``target`` inside the sandbox, read-only unless writable."""

    source: Path
    target: str
    writable: bool = False


@dataclass(frozen=True)
class Limits:
    """Resource bounds; every one is enforced inside the sandbox (see docs/sandbox.md)."""

    wall_seconds: float
    memory_bytes: int = 1 << 30  # RLIMIT_AS of every process
    processes: int = 128  # RLIMIT_NPROC
    file_bytes: int = 256 << 20  # RLIMIT_FSIZE: the largest file a process may write
    tmpfs_bytes: int = 256 << 20  # the size of each tmpfs in SandboxSpec.tmpfs


@dataclass(frozen=True)
class SandboxSpec:
    argv: tuple[str, ...]
    env: Mapping[str, str]  # the WHOLE environment of the process (nothing else passes)
    limits: Limits
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[str, ...] = ("/tmp",)  # noqa: S108 - a private tmpfs, not the host's
    cwd: str = "/"
    pass_fds: tuple[int, ...] = ()
    system: bool = True  # the read-only system allowlist (/usr, /lib*, /bin, /etc/ssl, …)
    interpreter: bool = False  # this Python and the confide package, read-only
    # May the sandboxed code build a sandbox of its own (new user and mount namespaces,
    # mount, netlink to bring up its loopback)? None: only when ``interpreter`` is set
    # (the enclave runtime, which runs the app in a nested sandbox).
    nesting: bool | None = None

    @property
    def allows_nesting(self) -> bool:
        return self.interpreter if self.nesting is None else self.nesting


@dataclass(frozen=True)
class Finished:
    exit_code: int | None
    timed_out: bool
    # "deadline", "cancelled" (the caller's cancel event), "memory", "file size",
    # "signal SIGKILL", "exit 3"…
    reason: str | None
    stdout_tail: bytes = field(repr=False)
    stderr_tail: bytes = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def sandbox_target(path: str, what: str) -> str:
    """``path`` as an absolute, normalised path inside the sandbox, never ``/`` itself."""
    if not path.startswith("/") or "\0" in path:
        raise SandboxError(f"{what} {path!r} must be an absolute path inside the sandbox")
    if any(part == ".." for part in path.split("/")):
        raise SandboxError(f"{what} {path!r} must not contain '..'")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        raise SandboxError(f"{what} cannot be / (the root is built by the sandbox)")
    return normal


def _validate_command(spec: SandboxSpec) -> None:
    if not spec.argv or not spec.argv[0]:
        raise SandboxError("the sandbox needs a command (argv is empty)")
    if "=" in spec.argv[0]:
        raise SandboxError(f"the command {spec.argv[0]!r} contains '=' (not a program)")
    if any("\0" in arg for arg in spec.argv):
        raise SandboxError("an argument contains a NUL byte")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SandboxError(f"environment name {key!r} or its value is not valid")


def validate(spec: SandboxSpec) -> None:
    """Refuse a spec the backends could only run by loosening the confinement."""
    _validate_command(spec)
    limits = spec.limits
    if not limits.wall_seconds > 0:
        raise SandboxError("limits.wall_seconds must be positive")
    for name in ("memory_bytes", "processes", "file_bytes", "tmpfs_bytes"):
        if getattr(limits, name) <= 0:
            raise SandboxError(f"limits.{name} must be positive")
    if not spec.cwd.startswith("/"):
        raise SandboxError(f"cwd {spec.cwd!r} must be absolute")
    targets = [sandbox_target(path, "tmpfs") for path in spec.tmpfs]
    for mount in spec.mounts:
        targets.append(sandbox_target(mount.target, "mount target"))
        if not os.path.exists(mount.source):
            raise SandboxError(f"mount source {mount.source} does not exist")
    if len(set(targets)) != len(targets):
        raise SandboxError(f"two mounts or tmpfs share a target: {sorted(targets)}")
    for fd in spec.pass_fds:
        if fd < 3:
            raise SandboxError(f"pass_fds: {fd} is stdin, stdout or stderr")
        try:
            os.fstat(fd)
        except OSError as error:
            raise SandboxError(f"pass_fds: {fd} is not an open file descriptor") from error
