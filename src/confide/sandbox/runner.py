"""Run a SandboxSpec: pick a working backend, start it, stream its output, enforce the
deadline, and say how it ended.

Fail-closed: :func:`backend` tries each backend once per process with a real sandboxed
``true`` (the same namespaces, root, seccomp filter and wrappers as a real run) and
raises SandboxError naming why each failed when none works; nothing ever runs
unconfined. At the deadline the backend's whole process group is killed with SIGKILL:
that kills the sandbox's pid 1, and with it every process of its pid namespace (a
forked grandchild that left the session included).
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from typing import IO

from confide.sandbox import bwrap, unshare
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
DRAIN_SECONDS = 5.0  # after a kill, how long the pipes may take to close
MEMORY_SIGNS = (b"MemoryError", b"out of memory", b"Cannot allocate memory", b"bad_alloc")


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


def _start(spec: SandboxSpec, kind: str) -> tuple[subprocess.Popen[bytes], list[int], str]:
    uid, gid = sandbox_ids()
    ops = plan(spec, uid, gid)
    seccomp = compile_filter(spec.allows_nesting)
    root = ""
    if kind == "bwrap":
        cmd = bwrap.command(spec, ops, uid, gid, seccomp)
    else:
        cmd, root = unshare.command(spec, ops, uid, gid, seccomp)
    try:
        process = subprocess.Popen(
            cmd.argv,
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
    return process, [], root


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def _outcome(code: int | None, timed_out: bool, stderr: bytes) -> str | None:
    if timed_out:
        return "deadline"
    if code is None:
        return None
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    if code > 128 and code - 128 in signal.valid_signals():
        name = signal.Signals(code - 128).name
        return "file size" if name == "SIGXFSZ" else f"signal {name}"
    if code != 0 and any(sign in stderr for sign in MEMORY_SIGNS):
        return "memory"
    return None if code == 0 else f"exit {code}"


def _supervise(
    process: subprocess.Popen[bytes],
    spec: SandboxSpec,
    stdin: bytes,
    on_output: Callable[[bytes], None] | None,
) -> Finished:
    deadline = time.monotonic() + spec.limits.wall_seconds
    tails: dict[int, _Tail] = {}
    selector = selectors.DefaultSelector()
    streams: list[IO[bytes]] = [s for s in (process.stdout, process.stderr) if s]
    assert len(streams) == 2
    for stream in streams:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
        tails[stream.fileno()] = _Tail()
    pending = memoryview(stdin)
    assert process.stdin is not None
    if pending:
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE)
    else:
        process.stdin.close()
    timed_out = False
    drain_until: float | None = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if drain_until is None and now >= deadline:
                timed_out = True
                _kill(process)
                drain_until = now + DRAIN_SECONDS
            if drain_until is not None and now >= drain_until:
                break
            limit = (drain_until or deadline) - now
            for key, _ in selector.select(max(0.0, min(limit, 1.0))):
                stream = key.fileobj
                assert not isinstance(stream, int)
                if stream is process.stdin:
                    try:
                        written = os.write(stream.fileno(), pending[:65536])
                    except (BrokenPipeError, BlockingIOError) as error:
                        written = len(pending) if isinstance(error, BrokenPipeError) else 0
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(stream)
                        stream.close()
                    continue
                try:
                    chunk = os.read(stream.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(stream)
                    continue
                tails[stream.fileno()].add(chunk)
                if on_output is not None:
                    on_output(chunk)
        remaining = max(0.0, deadline - time.monotonic()) if drain_until is None else 0.0
        try:
            process.wait(timeout=remaining if remaining > 0 else None if timed_out else 0.01)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(process)
            process.wait()
    finally:
        if process.poll() is None:
            _kill(process)
            process.wait()
        selector.close()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
    _kill(process)  # nothing of the group outlives the run, whatever the outcome
    out, err = (tail.value() for tail in tails.values())
    code = None if timed_out else process.returncode
    return Finished(code, timed_out, _outcome(code, timed_out, err), out, err)


@functools.cache
def _probe(kind: str) -> str | None:
    """None when ``kind`` works here, else why not."""
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
) -> Finished:
    process, _, root = _start(spec, kind)
    try:
        return _supervise(process, spec, stdin, on_output)
    finally:
        if root:
            with contextlib.suppress(OSError):
                os.rmdir(root)


def backend() -> str:
    """The first backend that works here ("bwrap", then "unshare"); SandboxError if none."""
    reasons = []
    for kind in KINDS:
        reason = _probe(kind)
        if reason is None:
            return kind
        reasons.append(f"{kind}: {reason}")
    raise SandboxError("no working sandbox, refusing to run unconfined (" + "; ".join(reasons) + ")")


def run(
    spec: SandboxSpec,
    *,
    kind: str | None = None,
    stdin: bytes = b"",
    on_output: Callable[[bytes], None] | None = None,
) -> Finished:
    """Run ``spec`` confined by ``kind`` (default: :func:`backend`) and wait for it."""
    validate(spec)
    if kind is None:
        kind = backend()
    elif kind not in KINDS:
        raise SandboxError(f"unknown sandbox {kind!r} (expected one of {', '.join(KINDS)})")
    else:
        reason = _probe(kind)
        if reason is not None:
            raise SandboxError(f"the {kind} sandbox does not work here: {reason}")
    return _execute(spec, kind, stdin, on_output)


