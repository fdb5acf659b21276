"""Inside ``unshare``: build the root, drop to the sandbox uid, exec the command.

Run by util-linux ``unshare --user --map-root-user --mount --pid --fork --net --ipc --uts
--cgroup`` as ``python -I -S _stage2.py FD`` (standard library only: it runs before the
root exists). It is root of a fresh user namespace and pid 1 of a fresh pid namespace.
It reads its instructions (a JSON document) from FD, mounts an empty tmpfs on the given
directory, builds the layout's operations there, makes the root read-only, pivots into
it, forks the command and waits as the namespace's init (its death kills every process
in the namespace). The command's process enters a second user namespace where it is the
sandbox uid with no capability over the mounts, sets its rlimits, loads the seccomp
filter and execs with exactly the given environment. Exit status: the command's, or 128
+ the signal that killed it (as bubblewrap reports it).
"""

import contextlib
import ctypes
import json
import os
import platform
import resource
import signal
import sys
import warnings  # noqa: F401 - os.execvpe imports it lazily, after the old root is gone
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
LOCKED = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
SECCOMP_MODE_FILTER = 2
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.prctl.argtypes = (
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_ulong,
)


class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def check(result: int, what: str) -> None:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _bytes(value: str | None) -> bytes | None:
    return value.encode() if value is not None else None


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    result = libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data))
    check(result, f"mount {target}")


def inside(root: str, target: str) -> str:
    """``root + target``, creating missing parents; refuses a parent that is a link."""
    path = root
    for part in target.strip("/").split("/")[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise OSError(f"{target} lies under the link {path[len(root) :]}")
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
    return os.path.join(path, target.rstrip("/").rsplit("/", 1)[-1])


def bind(source: str, dest: str, writable: bool, devices: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(dest, exist_ok=True)
    elif not os.path.exists(dest):
        open(dest, "w").close()
    mount(source, dest, None, MS_BIND | MS_REC)
    wanted = MS_NOSUID | (0 if devices else MS_NODEV) | (0 if writable else MS_RDONLY)
    locked = 0
    flags = os.statvfs(dest).f_flag  # ST_* equal MS_* for these bits
    for bit in (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_NOATIME, MS_NODIRATIME):
        if flags & bit:
            locked |= bit
    if flags & 4096:  # ST_RELATIME
        locked |= MS_RELATIME
    mount(None, dest, None, MS_REMOUNT | MS_BIND | wanted | locked)


def build(config: dict[str, Any]) -> None:
    root = config["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for op in config["ops"]:
        dest = inside(root, op["target"])
        kind = op["kind"]
        if kind in ("ro", "rw", "dev"):
            bind(op["source"], dest, kind == "rw", kind == "dev")
        elif kind == "tmpfs":
            os.makedirs(dest, exist_ok=True)
            mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={op['size']}")
        elif kind == "symlink":
            os.symlink(op["source"], dest)
        elif kind == "dir":
            os.makedirs(dest, exist_ok=True)
        elif kind == "proc":
            os.makedirs(dest, exist_ok=True)
            mount("proc", dest, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif kind == "data":
            with open(dest, "wb") as handle:
                handle.write(bytes.fromhex(op["data"]))
            os.chmod(dest, 0o644)
    if not config["nesting"]:
        # Only the one user namespace made below may exist under this one.
        with open(os.path.join(root, "proc/sys/user/max_user_namespaces"), "w") as handle:
            handle.write("1")
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    check(libc.syscall(PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def become_sandbox_user(uid: int, gid: int) -> None:
    check(libc.unshare(CLONE_NEWUSER), "unshare user namespace")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} 0 1"), ("gid_map", f"{gid} 0 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)


def command(config: dict[str, Any]) -> None:
    os.setsid()
    become_sandbox_user(config["uid"], config["gid"])
    for name, value in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    os.chdir(config["cwd"])
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0), "no_new_privs")
    if config["seccomp"]:
        program = bytes.fromhex(config["seccomp"])
        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = Fprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
        check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
    keep = sorted(set(config["pass_fds"]))
    low = 3
    for fd in [*keep, 1 << 20]:
        os.closerange(low, fd)
        low = fd + 1
    for fd in keep:
        os.set_inheritable(fd, True)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    argv = config["argv"]
    os.execvpe(argv[0], argv, config["env"])  # noqa: S606 - argv as given, no shell


def main() -> None:
    fd = int(sys.argv[1])
    with os.fdopen(fd, "rb") as handle:
        config = json.loads(handle.read())
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, None, 0, 0), "pdeathsig")
    try:
        build(config)
    except OSError as error:
        sys.stderr.write(f"sandbox (unshare): cannot build the root: {error}\n")
        os._exit(125)
    child = os.fork()
    if child == 0:
        try:
            command(config)
        except BaseException as error:  # reported, then the child ends
            sys.stderr.write(f"sandbox (unshare): cannot start {config['argv'][0]}: {error}\n")
        os._exit(127)
    check(libc.prctl(PR_SET_DUMPABLE, 0, None, 0, 0), "dumpable")
    for fd in config["pass_fds"]:
        with contextlib.suppress(OSError):
            os.close(fd)
    while True:
        pid, status = os.wait()
        if pid == child:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
