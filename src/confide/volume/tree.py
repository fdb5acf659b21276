"""Walking a source tree and publishing a finished tree atomically."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confide.errors import VolumeError


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative, '/'-separated
    absolute: str
    mode: int
    size: int


@dataclass(frozen=True)
class SourceTree:
    dirs: tuple[tuple[str, int], ...]  # (relative path, mode)
    files: tuple[SourceFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def walk_source(root: Path) -> SourceTree:
    """List every directory and regular file under ``root``, refusing anything else.

    Symbolic links, devices, sockets and FIFOs are refused rather than followed or
    skipped: a volume that silently lost a file, or followed a link out of the tree,
    would be worse than an error. Names must be valid UTF-8 (the manifest is JSON).
    """
    if not root.exists():
        raise VolumeError(f"source {root} does not exist")
    if not root.is_dir():
        raise VolumeError(f"source {root} is not a directory")
    dirs: list[tuple[str, int]] = []
    files: list[SourceFile] = []
    pending: list[tuple[str, str]] = [(os.fspath(root), "")]
    while pending:
        absolute_dir, relative_dir = pending.pop()
        try:
            entries = list(os.scandir(absolute_dir))
        except OSError as exc:
            raise VolumeError(f"cannot read directory {absolute_dir}: {exc.strerror}") from None
        for entry in entries:
            name = entry.name
            relative = f"{relative_dir}/{name}" if relative_dir else name
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise VolumeError(
                    f"{entry.path!r}: file name is not valid UTF-8; rename it first"
                ) from None
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise VolumeError(f"cannot stat {entry.path}: {exc.strerror}") from None
            if stat.S_ISLNK(info.st_mode):
                raise VolumeError(
                    f"{entry.path} is a symbolic link; volumes hold only regular files "
                    f"and directories (copy the target in, or remove the link)"
                )
            if stat.S_ISDIR(info.st_mode):
                dirs.append((relative, stat.S_IMODE(info.st_mode) & 0o777))
                pending.append((entry.path, relative))
            elif stat.S_ISREG(info.st_mode):
                files.append(
                    SourceFile(
                        relative, entry.path, stat.S_IMODE(info.st_mode) & 0o777, info.st_size
                    )
                )
            else:
                raise VolumeError(
                    f"{entry.path} is not a regular file or directory (device, socket "
                    f"or FIFO); volumes cannot hold it"
                )
    dirs.sort()
    files.sort(key=lambda f: f.path)
    return SourceTree(tuple(dirs), tuple(files))


def check_destination(dst: Path, force: bool) -> None:
    """Refuse a destination that is a file, or a non-empty directory without ``force``."""
    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
        raise VolumeError(f"destination {dst} exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise VolumeError(
            f"destination {dst} exists and is not empty; nothing was written "
            f"(use --force to replace it)"
        )
    if not dst.parent.is_dir():
        raise VolumeError(f"parent directory {dst.parent} does not exist")


def check_not_nested(src: Path, dst: Path) -> None:
    source, destination = src.resolve(), dst.resolve()
    if destination == source or source in destination.parents or destination in source.parents:
        raise VolumeError(f"source {src} and destination {dst} must not contain each other")


@contextmanager
def staging_dir(dst: Path) -> Iterator[Path]:
    """A private, hidden directory beside ``dst`` (same file system, so rename works),
    removed with everything in it if the block fails, is interrupted or is signalled.

    It is made inside the cleanup scope, so no moment exists where it exists and an
    error would leave it behind. Its name carries the owner's process id: what a
    process killed outright leaves (it may hold unverified plaintext) is swept by the
    next run for the same destination.
    """
    sweep_stale_staging(dst)
    staging = dst.parent / f".{dst.name}.partial-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        try:
            staging.mkdir(mode=0o700)
        except OSError as exc:
            raise VolumeError(f"cannot create {staging}: {exc.strerror}") from None
        yield staging
    except BaseException:
        discard(staging)
        raise


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:partial|old)-(?P<pid>[0-9]{1,10})-[0-9a-f]{12}")


def sweep_stale_staging(dst: Path) -> list[Path]:
    """Remove what processes that no longer run left beside ``dst``; never raises.

    Only real directories (not links) owned by this user, named like our staging
    (``.NAME.partial-PID-…``) or replaced trees (``.NAME.old-PID-…``), are touched.
    """
    removed: list[Path] = []
    try:
        candidates = list(os.scandir(dst.parent))
    except OSError:
        return removed
    for entry in candidates:
        match = _LEFTOVER.fullmatch(entry.name)
        if match is None or match["name"] != dst.name or _process_alive(int(match["pid"])):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            path = Path(entry.path)
            if remove_tree(path):
                removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid: leave it alone
    return True


def remove_tree(path: Path) -> bool:
    """Delete a directory tree without following any link, read-only entries included.

    Every step goes through directory file descriptors opened with ``O_NOFOLLOW``, so a
    link planted anywhere in or at the tree is removed, never followed. Returns whether
    the tree is gone.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        parent = os.open(path.parent, flags & ~os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        _remove_entry(parent, path.name, flags)
    except OSError:
        return False
    finally:
        os.close(parent)
    return True


def _remove_entry(parent: int, name: str, flags: int) -> None:
    info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    if info.st_uid == os.getuid():
        os.chmod(name, 0o700, dir_fd=parent)  # a real directory (checked just above)
    fd = os.open(name, flags, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            _remove_entry(fd, child, flags)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def publish(staging: Path, dst: Path, force: bool) -> None:
    """Move a finished tree into place.

    Without ``force``, one ``rename``: it succeeds onto nothing or an empty directory and
    fails on a non-empty one, so a tree that appeared at ``dst`` meanwhile is never
    replaced. With ``force``, the new tree and an existing ``dst`` are exchanged in one
    ``renameat2(RENAME_EXCHANGE)`` where the kernel offers it (``dst`` is the old tree
    or the new one at every moment), then the old tree is deleted.
    """
    if force and dst.is_dir() and not dst.is_symlink() and _exchange(staging, dst):
        if not remove_tree(staging):
            raise VolumeError(f"replaced {dst}, but could not delete the old tree at {staging}")
        return
    if force and dst.is_dir() and not dst.is_symlink():
        backup = dst.parent / f".{dst.name}.old-{os.getpid()}-{os.urandom(6).hex()}"
        dst.rename(backup)
        try:
            staging.rename(dst)
        except OSError as exc:
            backup.rename(dst)
            raise VolumeError(f"cannot move the result into {dst}: {exc.strerror}") from None
        remove_tree(backup)
        return
    try:
        staging.rename(dst)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise VolumeError(
                f"destination {dst} was filled while this ran; nothing was replaced "
                f"(use --force to replace it)"
            ) from None
        raise VolumeError(f"cannot move the result into {dst}: {exc.strerror}") from None


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where that is not offered."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def discard(staging: Path) -> None:
    """Remove a staging directory (and any plaintext in it), links never followed."""
    remove_tree(staging)
