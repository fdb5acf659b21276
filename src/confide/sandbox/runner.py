"""Run a SandboxSpec: pick a working backend, start it, stream its output, enforce the
deadline, and say how it ended.

Fail-closed: :func:`backend` tries each backend (until one passes) with a real sandboxed
``true`` (the same namespaces, root, seccomp filter and wrappers as a real run) and
raises SandboxError naming why each failed when none works; nothing ever runs
unconfined. At the deadline (or when the caller's ``cancel`` event is set) the backend's
whole process group is killed with SIGKILL: that kills the sandbox's pid 1, and with it
every process of its pid namespace (a forked grandchild that left the session included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from confide.sandbox import bwrap, unshare
from confide.sandbox.cgroups import RunGroups
from confide.sandbox.layout import plan, sandbox_ids
from confide.sandbox.seccomp import compile_filter
from confide.sandbox.spec import (
    TAIL_BYTES,
    Finished,
    Limits,
    SandboxError,
    SandboxSpec,
    validate,
)

KINDS = ("bwrap", "unshare")
# Set by the worker in the runtime's environment: the kind that runtime runs in.
KIND_VARIABLE = "CONFIDE_SANDBOX"
DRAIN_SECONDS = 5.0  # after a kill, how long the pipes may take to close
CANCEL_POLL_SECONDS = 0.1  # how soon a set ``cancel`` event is seen
MEMORY_SIGNS = (  # how Python, V8/node, glibc and C++ say an allocation failed (lower case)
    b"memoryerror",
    b"out of memory",
    b"cannot allocate memory",
    b"bad_alloc",
    b"fatal process oom",
    b"allocation failed",
)


class _Tail:
    """The last ``limit`` bytes of a stream, in bounded memory."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        self.buffer += chunk
        if len(self.buffer) > 2 * self.limit:
            del self.buffer[: -self.limit]

    def value(self) -> bytes:
        return bytes(self.buffer[-self.limit :])


def _start(
    spec: SandboxSpec, kind: str, group: RunGroups | None
) -> tuple[subprocess.Popen[bytes], str]:
    uid, gid = sandbox_ids()
    ops = plan(spec, uid, gid)
    seccomp = compile_filter(spec.allows_nesting)
    root = ""
    if kind == "bwrap":
        cmd = bwrap.command(spec, ops, uid, gid, seccomp)
    else:
        cmd, root = unshare.command(spec, ops, uid, gid, seccomp)
    argv = group.wrap(cmd.argv) if group is not None else cmd.argv
    try:
        process = subprocess.Popen(
            argv,
            env=cmd.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=[*cmd.pass_fds, *spec.pass_fds],
            start_new_session=True,
            cwd="/",
        )
    except OSError as error:
        if root:
            os.rmdir(root)
        raise SandboxError(f"cannot start {cmd.argv[0]}: {error}") from error
    finally:
        for fd in cmd.own_fds:
            os.close(fd)
    return process, root


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def _outcome(code: int | None, timed_out: bool, cancelled: bool, stderr: bytes) -> str | None:
    if timed_out or cancelled or code is None:
        return "deadline" if timed_out else "cancelled" if cancelled else None
    if code != 0 and any(sign in stderr[-16384:].lower() for sign in MEMORY_SIGNS):
        return "memory"  # a best guess from the last lines the process wrote
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    if code > 128 and code - 128 in signal.valid_signals():
        name = signal.Signals(code - 128).name
        return "file size" if name == "SIGXFSZ" else f"signal {name}"
    return None if code == 0 else f"exit {code}"


class _Session:
    """Streams one process's output into tails (and ``on_output``), feeds its stdin, and
    kills its process group at the deadline; raw file descriptors, non-blocking."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        stdin: bytes,
        on_output: Callable[[bytes], None] | None,
    ) -> None:
        if process.stdin is None or process.stdout is None or process.stderr is None:
            raise SandboxError("the sandbox process has no pipes")
        self.process = process
        self.on_output = on_output
        self.pending = memoryview(stdin)
        self.selector = selectors.DefaultSelector()
        self.stdin_fd = process.stdin.fileno()
        self.tails = {process.stdout.fileno(): _Tail(), process.stderr.fileno(): _Tail()}
        for fd in self.tails:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
        if self.pending:
            os.set_blocking(self.stdin_fd, False)
            self.selector.register(self.stdin_fd, selectors.EVENT_WRITE)
        else:
            process.stdin.close()

    def _write(self) -> None:
        try:
            written = os.write(self.stdin_fd, self.pending[:65536])
        except BlockingIOError:
            return
        except BrokenPipeError:
            written = len(self.pending)
        self.pending = self.pending[written:]
        if not self.pending:
            self.selector.unregister(self.stdin_fd)
            os.close(self.stdin_fd)

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(fd)
            return
        self.tails[fd].add(chunk)
        if self.on_output is not None:
            self.on_output(chunk)

    def pump(self, deadline: float, cancel: threading.Event | None) -> tuple[bool, bool]:
        """Move data until both outputs close: (the deadline struck first, ``cancel`` was
        set first)."""
        timed_out = cancelled = False
        drain_until: float | None = None
        step = 1.0 if cancel is None else CANCEL_POLL_SECONDS
        while self.selector.get_map():
            now = time.monotonic()
            if drain_until is None and (
                now >= deadline or (cancel is not None and cancel.is_set())
            ):
                timed_out, cancelled = now >= deadline, now < deadline
                _kill(self.process)
                drain_until = now + DRAIN_SECONDS
            if drain_until is not None and now >= drain_until:
                break  # something kept a pipe open past the kill: stop listening
            limit = (drain_until or deadline) - now
            for key, _ in self.selector.select(max(0.0, min(limit, step))):
                if key.fd == self.stdin_fd:
                    self._write()
                else:
                    self._read(key.fd)
        while not (timed_out or cancelled):  # the outputs closed: the process ends
            try:
                self.process.wait(timeout=max(0.01, min(step, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                elif cancel is not None and cancel.is_set():
                    cancelled = True
        return timed_out, cancelled

    def close(self) -> None:
        self.selector.close()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _supervise(
    process: subprocess.Popen[bytes],
    spec: SandboxSpec,
    stdin: bytes,
    on_output: Callable[[bytes], None] | None,
    cancel: threading.Event | None,
) -> Finished:
    deadline = time.monotonic() + spec.limits.wall_seconds
    session = _Session(process, stdin, on_output)
    try:
        timed_out, cancelled = session.pump(deadline, cancel)
    finally:
        if process.poll() is None:  # the deadline, or an exception: end the whole group
            _kill(process)
            process.wait()
        session.close()
    out, err = (tail.value() for tail in session.tails.values())
    code = None if timed_out or cancelled else process.returncode
    return Finished(code, timed_out, _outcome(code, timed_out, cancelled, err), out, err)


_WORKING: set[str] = set()  # backends whose probe passed in this process


def probe_kind(kind: str) -> str | None:
    """None when ``kind`` works here, else why not (a pass is remembered, a failure is
    tried again next time: it may have been a passing shortage)."""
    if kind in _WORKING:
        return None
    reason = _try(kind)
    if reason is None:
        _WORKING.add(kind)
    return reason


def _try(kind: str) -> str | None:
    binary = bwrap.executable() if kind == "bwrap" else unshare.executable()
    if binary is None:
        return f"{kind} is not installed"
    if not (os.path.exists("/usr/bin/prlimit") and os.path.exists("/usr/bin/env")):
        return "/usr/bin/prlimit or /usr/bin/env is missing"
    spec = SandboxSpec(argv=("/usr/bin/true",), env={}, limits=Limits(wall_seconds=30))
    try:
        finished = _execute(spec, kind)
    except (SandboxError, OSError) as error:
        return str(error)
    if finished.exit_code == 0:
        return None
    lines = finished.stderr_tail.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit {finished.exit_code}, reason {finished.reason}"


def _execute(
    spec: SandboxSpec,
    kind: str,
    stdin: bytes = b"",
    on_output: Callable[[bytes], None] | None = None,
    cancel: threading.Event | None = None,
) -> Finished:
    group = RunGroups.create(spec.limits.processes, spec.limits.memory_bytes)
    try:
        process, root = _start(spec, kind, group)
    except BaseException:
        if group is not None:
            group.remove()
        raise
    try:
        finished = _supervise(process, spec, stdin, on_output, cancel)
        if group is not None and not finished.ok and group.out_of_memory():
            finished = dataclasses.replace(finished, reason="memory")
        return finished
    finally:
        if group is not None:
            group.remove()
        if root:
            with contextlib.suppress(OSError):
                os.rmdir(root)


def backend() -> str:
    """The first backend that works here ("bwrap", then "unshare"); SandboxError if none."""
    reasons = []
    for kind in KINDS:
        reason = probe_kind(kind)
        if reason is None:
            return kind
        reasons.append(f"{kind}: {reason}")
    raise SandboxError(f"no working sandbox, refusing to run unconfined ({'; '.join(reasons)})")


def run(
    spec: SandboxSpec,
    *,
    kind: str | None = None,
    stdin: bytes = b"",
    on_output: Callable[[bytes], None] | None = None,
    cancel: threading.Event | None = None,
    probe: bool = True,
) -> Finished:
    """Run ``spec`` confined by ``kind`` (default: :func:`backend`) and wait for it.

    ``probe``: before its first run in a process, ``kind`` is tried on ``true`` so that
    a sandbox that does not work here is refused with its reason. ``probe=False`` (with
    a ``kind``) skips that for a caller told by its own sandbox which kind works (the
    enclave runtime, which starts once per task): a sandbox that does not start then
    fails the run itself. Never unconfined either way.

    ``cancel``: when it is set (by another thread), the whole tree is killed as at the
    deadline; the run then ends with ``reason`` "cancelled" (``exit_code`` None). A
    caller whose deadline is only known later (a runtime started before its task is
    claimed) gives a generous wall and sets ``cancel`` at the real deadline."""
    validate(spec)
    if kind is None:
        kind = backend()
    elif kind not in KINDS:
        raise SandboxError(f"unknown sandbox {kind!r} (expected one of {', '.join(KINDS)})")
    elif probe:
        reason = probe_kind(kind)
        if reason is not None:
            raise SandboxError(f"the {kind} sandbox does not work here: {reason}")
    return _execute(spec, kind, stdin, on_output, cancel)


def run_in_given_kind(spec: SandboxSpec) -> Finished:
    """Run ``spec`` nested in the kind this process's own sandbox was started in (named by
    :data:`KIND_VARIABLE`, which the enclave runtime's starter sets): that kind works here,
    so no probe runs first, and only a failed run pays for one, so that a sandbox that
    cannot start is SandboxError naming it, not blamed on the program. Without the
    variable: :func:`run` with the best kind here. Never unconfined either way."""
    kind = os.environ.get(KIND_VARIABLE)
    if kind not in KINDS:
        return run(spec)
    finished = run(spec, kind=kind, probe=False)
    if not finished.ok and (reason := probe_kind(kind)) is not None:
        raise SandboxError(f"the {kind} sandbox does not work here: {reason}")
    return finished
