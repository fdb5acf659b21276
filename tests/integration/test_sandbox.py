"""The sandbox for real (bubblewrap and util-linux unshare, no mocks): no network, no
host files, killed at the deadline with everything it forked, bounded disk and memory,
an exact environment, its own uid, and a sandbox inside a sandbox."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confide.sandbox import Finished, Limits, Mount, SandboxError, SandboxSpec, run
from confide.sandbox.runner import probe_kind
from confide.sandbox.seccomp import available as seccomp_available

KINDS = [kind for kind in ("bwrap", "unshare") if probe_kind(kind) is None]
pytestmark = pytest.mark.skipif(not KINDS, reason="no working sandbox on this machine")
PATH = {"PATH": "/usr/bin:/bin"}


def python(code: str, **kwargs: object) -> SandboxSpec:
    """python3 from /usr running ``code`` with a 20 s deadline unless told otherwise."""
    limits = kwargs.pop("limits", Limits(wall_seconds=20))
    env = kwargs.pop("env", PATH)
    return SandboxSpec(
        argv=("python3", "-c", textwrap.dedent(code)),
        env=env,  # type: ignore[arg-type]
        limits=limits,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def report(finished: Finished) -> dict[str, Any]:
    assert finished.exit_code == 0, finished.stderr_tail.decode()
    result: dict[str, Any] = json.loads(finished.stdout_tail)
    return result


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0)
    yield server
    server.close()


def test_no_network_loopback_included(kind: str, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = f"""
        import json, socket
        out = {{}}
        for name, family in (("inet", socket.AF_INET), ("inet6", socket.AF_INET6)):
            try:
                socket.socket(family, socket.SOCK_STREAM)
                out[name] = "created"
            except OSError as error:
                out[name] = error.errno
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            out["connect"] = "connected"
        except OSError as error:
            out["connect"] = error.errno
        print(json.dumps(out))
    """
    out = report(run(python(code), kind=kind))
    assert out["connect"] != "connected"
    if seccomp_available():
        assert out["inet"] == out["inet6"] == errno.EAFNOSUPPORT
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever reached the host's loopback


def test_cannot_read_host_files(kind: str, tmp_path: Path) -> None:
    wallet = tmp_path / "home" / "wallet.json"
    wallet.parent.mkdir()
    wallet.write_text('{"private": "key"}')
    home = os.path.expanduser("~")
    code = f"""
        import json, os
        out = {{}}
        for name, path in (("wallet", {str(wallet)!r}), ("home", {home!r}),
                           ("cwd", {os.getcwd()!r}), ("etc", "/etc/shadow")):
            try:
                os.listdir(path) if os.path.isdir(path) else open(path).read()
                out[name] = "read"
            except OSError as error:
                out[name] = error.errno
        print(json.dumps(out))
    """
    out = report(run(python(code), kind=kind))
    assert out == dict.fromkeys(("wallet", "home", "cwd", "etc"), errno.ENOENT)


def _alive(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def test_deadline_kills_forked_grandchild(kind: str, tmp_path: Path) -> None:
    marker = f"grandchild-{uuid.uuid4().hex}"
    beat = tmp_path / "beat"
    beat.write_text("")
    code = f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for fd in (0, 1, 2):
                    os.close(fd)
                os.execv("/usr/bin/python3", ["python3", "-c",
                    "import time\\n"
                    "while True:\\n"
                    "    open('/out/beat', 'a').write('.')\\n"
                    "    time.sleep(0.05)\\n", {marker!r}])
            os._exit(0)
        while os.path.getsize("/out/beat") == 0:
            time.sleep(0.01)
        print("grandchild running", flush=True)
        time.sleep(600)
    """
    spec = python(
        code,
        limits=Limits(wall_seconds=3),
        mounts=(Mount(tmp_path, "/out", writable=True),),
    )
    finished = run(spec, kind=kind)
    assert finished.timed_out and finished.reason == "deadline"
    assert finished.exit_code is None
    assert b"grandchild running" in finished.stdout_tail
    for _ in range(100):  # the kernel tears the pid namespace down right after the kill
        if not _alive(marker):
            break
        time.sleep(0.05)
    assert _alive(marker) == []
    size = beat.stat().st_size
    time.sleep(0.3)
    assert beat.stat().st_size == size  # no heartbeat after the deadline


def test_cancel_kills_the_tree(kind: str, tmp_path: Path) -> None:
    """A caller's cancel event (the worker at a task's deadline) ends the run as the wall
    would: the whole tree, a grandchild that left the session included."""
    marker = f"cancelled-{uuid.uuid4().hex}"
    code = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            for fd in (0, 1, 2):
                os.close(fd)
            os.execv("/usr/bin/python3", ["python3", "-c", "import time; time.sleep(600)",
                {marker!r}])
        print("running", flush=True)
        time.sleep(600)
    """
    cancel = threading.Event()
    timer = threading.Timer(1.5, cancel.set)
    timer.start()
    began = time.monotonic()
    finished = run(python(code, limits=Limits(wall_seconds=60)), kind=kind, cancel=cancel)
    timer.cancel()
    assert time.monotonic() - began < 10
    assert finished.reason == "cancelled" and not finished.timed_out
    assert finished.exit_code is None and not finished.ok
    assert b"running" in finished.stdout_tail
    for _ in range(100):
        if not _alive(marker):
            break
        time.sleep(0.05)
    assert _alive(marker) == []
    quick = run(python("print('done')"), kind=kind, cancel=threading.Event())
    assert quick.ok and quick.reason is None  # an event never set changes nothing


def test_cannot_fill_the_disk(kind: str, tmp_path: Path) -> None:
    code = """
        import errno, json, os
        out = {}
        def fill(path, total):
            written = 0
            try:
                with open(path, "wb") as handle:
                    while written < total:
                        handle.write(b"x" * 65536)
                        handle.flush()
                        written += 65536
            except OSError as error:
                return [error.errno, written]
            return ["no error", written]
        out["tmpfs"] = fill("/tmp/big", 8 << 20)
        out["mount"] = fill("/out/big", 8 << 20)
        out["root"] = fill("/new-file", 1)
        out["usr"] = fill("/usr/new-file", 1)
        print(json.dumps(out))
    """
    limits = Limits(wall_seconds=20, tmpfs_bytes=1 << 20, file_bytes=2 << 20)
    spec = python(code, limits=limits, mounts=(Mount(tmp_path, "/out", writable=True),))
    out = report(run(spec, kind=kind))
    assert out["tmpfs"][0] == errno.ENOSPC and out["tmpfs"][1] <= 1 << 20
    assert out["mount"][0] == errno.EFBIG
    assert out["root"][0] == out["usr"][0] == errno.EROFS
    assert [p.name for p in tmp_path.iterdir()] == ["big"]
    assert (tmp_path / "big").stat().st_size <= 2 << 20


@pytest.mark.parametrize("language", ["python", "node"])
def test_memory_limit_stops_the_app(kind: str, language: str) -> None:
    if language == "python":
        code = """
            chunks = []
            for _ in range(64):
                chunks.append(bytearray(32 << 20))
            print("allocated 2 GiB")
        """
        spec = python(code, limits=Limits(wall_seconds=20, memory_bytes=256 << 20))
    else:
        if not Path("/usr/bin/node").exists():
            pytest.skip("node is not installed in /usr/bin")
        code = "const a = []; for (let i = 0; i < 256; i++) a.push(Buffer.alloc(16 << 20, 1));"
        limits = Limits(wall_seconds=20, memory_bytes=1536 << 20)
        argv = ("node", "-e", code + "console.log('allocated 4 GiB')")
        spec = SandboxSpec(argv=argv, env=PATH, limits=limits)
    finished = run(spec, kind=kind)
    assert finished.exit_code not in (0, None)
    assert finished.reason == "memory"
    assert b"allocated" not in finished.stdout_tail


def test_memory_is_bounded_for_the_whole_tree_not_per_process(kind: str) -> None:
    """Eight processes of 96 MiB each stay under a per-process 256 MiB limit; together
    they pass the tree's 256 MiB, and the run is stopped (where a memory cgroup can be
    made: otherwise rlimits alone apply, per process)."""
    from confide.sandbox.cgroups import RunGroups

    probe = RunGroups.create(8, 1 << 30)
    if probe is None or not any(
        "memory" in str(path) or (path / "memory.max").exists() for path in probe.paths
    ):
        if probe is not None:
            probe.remove()
        pytest.skip("no writable memory cgroup here: the tree bound needs one")
    probe.remove()
    code = """
        import os, time
        children = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                block = bytearray(96 << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(10)
                os._exit(0)
            children.append(pid)
        statuses = [os.waitpid(pid, 0)[1] for pid in children]
        if any(statuses):
            raise SystemExit(f"children ended with {statuses}")
        print("all eight held 768 MiB")
    """
    spec = python(code, limits=Limits(wall_seconds=30, memory_bytes=256 << 20))
    finished = run(spec, kind=kind)
    assert b"all eight held" not in finished.stdout_tail
    assert finished.exit_code != 0 or finished.reason is not None
    assert finished.reason == "memory", report(finished)


def test_environment_is_exactly_spec_env(kind: str) -> None:
    env = {"PATH": "/usr/bin", "A": "b=c", "EMPTY": "", "SPACES": " x y ", "PWD": "/odd"}
    spec = SandboxSpec(argv=("env", "-0"), env=env, limits=Limits(wall_seconds=20))
    finished = run(spec, kind=kind)
    assert finished.exit_code == 0, finished.stderr_tail
    pairs = [item.split(b"=", 1) for item in finished.stdout_tail.split(b"\0") if item]
    assert {k.decode(): v.decode() for k, v in pairs} == env
    assert len(pairs) == len(env)


def test_runs_under_another_uid_with_fds_and_stdin(kind: str) -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"through fd")
        code = f"""
            import json, os, sys
            print(json.dumps({{"uid": os.getuid(), "gid": os.getgid(),
                               "fd": os.read({read_end}, 100).decode(),
                               "stdin": sys.stdin.read(),
                               "fds": sorted(int(f) for f in os.listdir("/proc/self/fd"))}}))
        """
        out = report(run(python(code, pass_fds=(read_end,)), kind=kind, stdin=b"hello"))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert out["uid"] != os.getuid() and out["uid"] in (1000, 1001)
    assert out["gid"] in (1000, 1001)
    assert out["fd"] == "through fd" and out["stdin"] == "hello"
    assert set(out["fds"]) <= {0, 1, 2, 3, read_end}


def test_output_keeps_the_last_100_kb(kind: str) -> None:
    seen: list[bytes] = []
    code = "import sys\nfor i in range(30000): print(f'{i:09d}')\nprint('err', file=sys.stderr)"
    finished = run(python(code), kind=kind, on_output=seen.append)
    assert finished.exit_code == 0
    assert len(finished.stdout_tail) == 100_000
    assert finished.stdout_tail.endswith(b"000029999\n")
    assert finished.stderr_tail == b"err\n"
    assert sum(len(chunk) for chunk in seen) == 300_000 + 4


def test_seccomp_denies_ptrace_mount_and_user_namespaces(kind: str) -> None:
    if not seccomp_available():
        pytest.skip("libseccomp is not available")
    code = """
        import ctypes, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        out = {}
        for name, call in (("ptrace", lambda: libc.ptrace(16, 1, 0, 0)),
                           ("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
                           ("unshare", lambda: libc.unshare(0x10000000)),
                           ("keyctl", lambda: libc.syscall(250, 0, 0, 0, 0))):
            out[name] = ctypes.get_errno() if call() < 0 else "allowed"
        print(json.dumps(out))
    """
    out = report(run(python(code), kind=kind))
    assert out == {
        "ptrace": errno.EPERM,
        "mount": errno.EPERM,
        "unshare": errno.EPERM,
        "keyctl": errno.EPERM,
    }


RUNTIME = """
import json, os, sys
from pathlib import Path
from confide.sandbox import Limits, Mount, SandboxSpec, run
app = Path("/job/app")
app.mkdir()
(app / "main.py").write_text(
    "import json, os\\n"
    "open('/out/result.txt', 'w').write('f(3) = 56')\\n"
    "print(json.dumps({'uid': os.getuid(), 'root': sorted(os.listdir('/')),"
    " 'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}))\\n"
)
spec = SandboxSpec(
    argv=("python3", "/app/main.py"), env={"PATH": "/usr/bin"},
    limits=Limits(wall_seconds=20, tmpfs_bytes=1 << 20),
    mounts=(Mount(app, "/app"),), tmpfs=("/tmp", "/out"),
)
finished = run(spec, kind=sys.argv[1])
print(json.dumps({"runtime_uid": os.getuid(), "relay": os.read(int(sys.argv[2]), 5).decode(),
                  "exit": finished.exit_code, "app": finished.stdout_tail.decode(),
                  "err": finished.stderr_tail.decode()}))
"""


@pytest.mark.parametrize("inner", KINDS)
def test_nested_sandbox(kind: str, inner: str, tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "runtime.py").write_text(RUNTIME)
    relay, relay_peer = socket.socketpair()
    relay.sendall(b"relay")
    try:
        spec = SandboxSpec(
            argv=(sys.executable, "/job/runtime.py", inner, str(relay_peer.fileno())),
            env=PATH,
            limits=Limits(wall_seconds=40),
            mounts=(Mount(job, "/job", writable=True),),
            interpreter=True,
            pass_fds=(relay_peer.fileno(),),
        )
        out = report(run(spec, kind=kind))
    finally:
        relay.close()
        relay_peer.close()
    assert out["exit"] == 0, out["err"]
    assert out["relay"] == "relay"
    app = json.loads(str(out["app"]))
    assert app["uid"] != out["runtime_uid"]
    assert app["root"] == sorted(
        ["app", "bin", "dev", "etc", "lib", "lib64", "out", "proc", "sbin", "tmp", "usr"]
    )
    assert app["pids"][0] == 1 and len(app["pids"]) <= 3  # its own pid namespace
    assert not (job / "app" / "result.txt").exists()  # /out was the app's own tmpfs


def test_no_working_sandbox_refuses_to_run(kind: str) -> None:
    """Inside an app sandbox (no new user namespaces) neither backend works: run()
    raises and names both reasons; the command never runs."""
    code = """
        import sys
        from confide.sandbox import Limits, SandboxError, SandboxSpec, run
        try:
            run(SandboxSpec(argv=("/usr/bin/touch", "/tmp/ran"), env={},
                            limits=Limits(wall_seconds=10)))
        except SandboxError as error:
            print(error)
            sys.exit(0)
        sys.exit(3)
    """
    spec = SandboxSpec(
        argv=(sys.executable, "-c", textwrap.dedent(code)),
        env=PATH,
        limits=Limits(wall_seconds=40),
        interpreter=True,
        nesting=False,
    )
    finished = run(spec, kind=kind)
    assert finished.exit_code == 0, finished.stderr_tail.decode()
    message = finished.stdout_tail.decode()
    assert "no working sandbox" in message and "bwrap:" in message and "unshare:" in message


def test_a_kind_run_without_its_probe_fails_closed(kind: str) -> None:
    """probe=False (the runtime, told its kind by the worker) where that kind cannot
    start: the run fails, nothing raises past it, and the command never runs."""
    code = f"""
        import os, sys
        from confide.sandbox import Limits, SandboxSpec, run
        finished = run(SandboxSpec(argv=("/usr/bin/touch", "/tmp/ran"), env={{}},
                                   limits=Limits(wall_seconds=10)), kind={kind!r}, probe=False)
        print(finished.ok, finished.exit_code, os.path.exists("/tmp/ran"))
    """
    spec = SandboxSpec(
        argv=(sys.executable, "-c", textwrap.dedent(code)),
        env=PATH,
        limits=Limits(wall_seconds=40),
        interpreter=True,
        nesting=False,
        tmpfs=("/tmp",),
    )
    finished = run(spec, kind=kind)
    assert finished.exit_code == 0, finished.stderr_tail.decode()
    ok, code_text, ran = finished.stdout_tail.decode().split()
    assert (ok, ran) == ("False", "False") and code_text != "0"


def test_unknown_kind_and_bad_specs() -> None:
    with pytest.raises(SandboxError, match="unknown sandbox"):
        run(python("pass"), kind="docker")
    with pytest.raises(SandboxError, match="absolute"):
        run(python("pass", tmpfs=("tmp",)))
    with pytest.raises(SandboxError, match="does not exist"):
        run(python("pass", mounts=(Mount(Path("/nonexistent/x"), "/x"),)))
    with pytest.raises(SandboxError, match="cannot be /"):
        run(python("pass", mounts=(Mount(Path("/usr"), "/"),)))


def test_fork_bomb_is_bounded(kind: str) -> None:
    """``processes`` holds even for a root caller (a pids cgroup where rlimits do not)."""
    code = """
        import json, os, time
        forked = 0
        try:
            for _ in range(100):
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
                forked += 1
        except OSError as error:
            print(json.dumps({"forked": forked, "errno": error.errno}))
        else:
            print(json.dumps({"forked": forked}))
    """
    out = report(run(python(code, limits=Limits(wall_seconds=20, processes=16)), kind=kind))
    assert out["forked"] < 16 and out["errno"] == errno.EAGAIN


def test_an_interpreter_under_tmp_stays_visible_above_the_sandboxs_tmpfs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkout under /tmp (`git clone … /tmp/x`): its venv is mounted after the
    sandbox's own /tmp tmpfs, never hidden by it."""
    from confide.sandbox import layout

    monkeypatch.setattr(layout, "interpreter_paths", lambda: ["/tmp/checkout/.venv"])
    spec = SandboxSpec(argv=("true",), env={}, limits=Limits(wall_seconds=5), interpreter=True)
    targets = [op.target for op in layout.plan(spec, 1000, 1000)]
    assert targets.index("/tmp") < targets.index("/tmp/checkout/.venv")
