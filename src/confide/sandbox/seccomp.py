"""The seccomp filter, compiled by libseccomp (through ctypes) into a BPF program.

Two profiles. ``app`` is what an app gets: sockets of any family but AF_UNIX fail with
EAFNOSUPPORT, and the calls that reach past the process's own sandbox fail with EPERM
(ptrace and reading other processes' memory, mount and friends, keyrings, bpf,
perf_event_open, module and kexec loading, io_uring — whose ops would bypass this very
filter —, new user namespaces through clone or unshare, setns). ``nesting`` is what the
enclave runtime gets: the same, except what building the app's nested sandbox needs
(mount, pivot_root, unshare, setns, clone with new namespaces, AF_NETLINK to bring up
the nested loopback). ``clone3`` fails with ENOSYS in both (its flags sit behind a
pointer that seccomp cannot read; libc falls back to ``clone``).

Without libseccomp (the library does not load) :func:`compile_filter` returns None and
the namespaces, uid and limits still apply; docs/sandbox.md says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

ACT_ALLOW = 0x7FFF0000
CMP_EQ = 4
CMP_GE = 5
CMP_MASKED_EQ = 7
AF_UNIX = 1
AF_NETLINK = 16
AF_MAX = 46  # families at or above this do not exist yet; refused too
CLONE_NEWUSER = 0x10000000

DENIED_ALWAYS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "syslog",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "vhangup",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "uselib",
    "modify_ldt",
    "fanotify_init",
)
DENIED_UNLESS_NESTING = (
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


@functools.cache
def _library() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        name = ctypes.util.find_library("seccomp")
        if name is None:
            return None
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def available() -> bool:
    return _library() is not None


class _Builder:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(ACT_ALLOW)
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, name: str, *conditions: tuple[int, int, int, int]) -> None:
        number = self.lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:  # not a syscall on this architecture
            return
        array = (_ArgCmp * max(1, len(conditions)))(*[_ArgCmp(*c) for c in conditions])
        result = self.lib.seccomp_rule_add_array(self.ctx, action, number, len(conditions), array)
        if result < 0:
            raise OSError(-result, f"seccomp rule for {name}: {os.strerror(-result)}")

    def export(self) -> bytes:
        fd = os.memfd_create("confide-seccomp", os.MFD_CLOEXEC)
        try:
            result = self.lib.seccomp_export_bpf(self.ctx, fd)
            if result < 0:
                raise OSError(-result, "seccomp_export_bpf failed")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def release(self) -> None:
        self.lib.seccomp_release(self.ctx)


@functools.cache
def compile_filter(nesting: bool) -> bytes | None:
    """The BPF program of the ``nesting`` or ``app`` profile; None without libseccomp."""
    lib = _library()
    if lib is None:
        return None
    builder = _Builder(lib)
    try:
        eperm = _errno_action(errno.EPERM)
        denied = DENIED_ALWAYS if nesting else DENIED_ALWAYS + DENIED_UNLESS_NESTING
        for name in denied:
            builder.rule(eperm, name)
        if not nesting:
            builder.rule(eperm, "clone", (0, CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        builder.rule(_errno_action(errno.ENOSYS), "clone3")
        allowed = {AF_UNIX, AF_NETLINK} if nesting else {AF_UNIX}
        nosupport = _errno_action(errno.EAFNOSUPPORT)
        for call in ("socket", "socketpair"):
            for family in range(AF_MAX):
                if family not in allowed:
                    builder.rule(nosupport, call, (0, CMP_EQ, family, 0))
            builder.rule(nosupport, call, (0, CMP_GE, AF_MAX, 0))
        return builder.export()
    finally:
        builder.release()
