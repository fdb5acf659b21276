"""Walking a source tree and publishing a finished tree atomically."""

from __future__ import annotations

import os
import shutil
import stat
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


def make_staging_dir(dst: Path) -> Path:
    """A private, hidden directory beside ``dst`` (same file system, so rename works).

    Its name carries the owner's process id. A process killed part way cannot clean up,
    and what it leaves may hold unverified plaintext, so every new staging directory
    first removes those of ``dst`` whose process is gone.
    """
    sweep_stale_staging(dst)
    staging = dst.parent / f".{dst.name}.partial-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        staging.mkdir(mode=0o700)
    except OSError as exc:
        raise VolumeError(f"cannot create {staging}: {exc.strerror}") from None
    return staging


def sweep_stale_staging(dst: Path) -> list[Path]:
    """Remove the staging directories of ``dst`` left by processes that no longer run."""
    removed: list[Path] = []
    prefix = f".{dst.name}.partial-"
    try:
        candidates = [p for p in dst.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for candidate in candidates:
        pid_text = candidate.name[len(prefix) :].partition("-")[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)) and candidate.is_dir():
            discard(candidate)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(staging: Path, dst: Path) -> None:
    """Move a finished tree into place; replace an existing ``dst`` only once it is done.

    The old tree is renamed aside first, and restored if the final rename fails, so at
    every moment ``dst`` is either the old tree or the complete new one.
    """
    backup: Path | None = None
    if dst.is_dir():
        if any(dst.iterdir()):
            backup = dst.parent / f".{dst.name}.old-{os.urandom(6).hex()}"
            dst.rename(backup)
        else:
            dst.rmdir()
    try:
        staging.rename(dst)
    except OSError as exc:
        if backup is not None:
            backup.rename(dst)
        raise VolumeError(f"cannot move the result into {dst}: {exc.strerror}") from None
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def discard(staging: Path) -> None:
    """Remove a staging directory, including read-only entries."""
    for directory, _subdirs, _files in os.walk(staging):
        os.chmod(directory, 0o700)
    shutil.rmtree(staging, ignore_errors=True)
