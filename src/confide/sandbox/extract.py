"""Safe extraction of a bundle or dataset tar.

Only regular files and directories are extracted, under ``dest`` and nowhere else:
absolute names, ``..``, symbolic and hard links, devices, fifos, sparse files and
setuid / setgid / sticky bits are refused, and so is an archive whose files add up to
more than ``max_bytes`` or whose entries number more than ``max_files`` (checked before
a byte of the offending entry is written). Every refusal names the entry. On a refusal
nothing of the archive is left behind: ``dest`` is removed if this call made it, and
emptied otherwise. Files are written with O_EXCL | O_NOFOLLOW into a ``dest`` that must
be empty, so no entry can write through a path an earlier one prepared.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from confide.sandbox.spec import SandboxError

CHUNK = 1 << 20
SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    if member.issparse():
        return "a sparse file"
    return f"an entry of type {member.type!r}"


def _parts(name: str) -> tuple[str, ...]:
    if not name or "\0" in name:
        raise ValueError("has an empty or NUL name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise ValueError("is an absolute path")
    if any(part == ".." for part in path.parts):
        raise ValueError("contains '..'")
    return tuple(part for part in path.parts if part not in ("", "."))


def _checked(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The entry's path parts under dest, or SandboxError naming why it is refused."""
    try:
        parts = _parts(member.name)
    except ValueError as error:
        raise SandboxError(f"entry {member.name!r} {error}") from None
    if not (member.isdir() or (member.isreg() and not member.issparse())):
        raise SandboxError(
            f"entry {member.name!r} is {_kind(member)}: only regular files and "
            f"directories are extracted"
        )
    if member.mode & SPECIAL_BITS:
        raise SandboxError(
            f"entry {member.name!r} has the setuid, setgid or sticky bit (mode {member.mode:o})"
        )
    return parts


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise SandboxError(f"entry {member.name!r} has no content")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, 0o600)
    try:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(CHUNK, remaining))
            if not chunk:
                raise SandboxError(f"entry {member.name!r} is truncated")
            os.write(fd, chunk)
            remaining -= len(chunk)
        os.fchmod(fd, member.mode & 0o777)
    finally:
        os.close(fd)


def _extract(tar: tarfile.TarFile, dest: Path, max_bytes: int, max_files: int) -> None:
    total = 0
    count = 0
    directories: dict[Path, int] = {}
    for member in tar:
        count += 1
        if count > max_files:
            raise SandboxError(f"entry {member.name!r}: more than {max_files} entries")
        parts = _checked(member)
        if not parts:
            continue  # "." itself
        target = dest.joinpath(*parts)
        parent = dest
        for part in parts[:-1]:
            parent = parent / part
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                raise SandboxError(f"entry {member.name!r} lies under a file, not a directory")
            if not parent.exists():
                parent.mkdir(mode=0o700)
                directories.setdefault(parent, 0o755)
        if member.isdir():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise SandboxError(f"entry {member.name!r} appears twice")
            if not target.exists():
                target.mkdir(mode=0o700)
            directories[target] = member.mode & 0o777
            continue
        total += member.size
        if total > max_bytes:
            raise SandboxError(
                f"entry {member.name!r}: the archive's files exceed {max_bytes} bytes"
            )
        if os.path.lexists(target):
            raise SandboxError(f"entry {member.name!r} appears twice")
        _copy(tar, member, target)
    for directory, mode in sorted(directories.items(), key=lambda item: -len(item[0].parts)):
        os.chmod(directory, mode | 0o700)


def extract_tar(tar: Path, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """Extract ``tar`` into ``dest`` (missing or empty), refusing anything unsafe."""
    created = not dest.exists()
    if created:
        dest.mkdir(mode=0o700, parents=True)
    elif not dest.is_dir() or any(dest.iterdir()):
        raise SandboxError(f"{dest} must be an empty directory to extract {tar.name} into")
    try:
        with tarfile.open(tar, mode="r:*") as archive:
            _extract(archive, dest, max_bytes, max_files)
    except BaseException as error:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        if isinstance(error, (tarfile.TarError, OSError)):
            raise SandboxError(f"cannot extract {tar.name}: {error}") from error
        raise
