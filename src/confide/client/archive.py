"""A directory as one deterministic tar: the blob an app bundle or a dataset volume is
uploaded as.

The same tree gives the same bytes, so the same blob digest, whoever packs it and when:
entries sorted by path, every time stamp 0, owner and group 0 with no names, only the
permission bits of each mode, PAX format (long and non-ASCII names kept exactly).
Links, devices and other special files are refused with the path that holds them (a
bundle's measurement refuses them too).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from confide.errors import ConfideError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Packed:
    path: Path  # the tar file
    digest: str  # its SHA-256 (hex): the blob's address in the storage
    size: int


def entries(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) of every directory and regular file under ``root``, sorted."""
    if not root.is_dir():
        raise ConfideError(f"{root} is not a directory")
    found: list[tuple[str, Path]] = []

    def refuse(error: OSError) -> None:
        raise ConfideError(f"cannot read {error.filename}: {error.strerror}")

    for directory, subdirs, names in os.walk(root, onerror=refuse):
        for name in [*subdirs, *names]:
            full = Path(directory, name)
            mode = full.lstat().st_mode
            relative = full.relative_to(root).as_posix()
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ConfideError(
                    f"{relative} in {root}: only regular files and directories are packed "
                    f"(no links, devices or sockets)"
                )
            found.append((relative, full))
    return sorted(found)


def pack(root: Path, destination: Path) -> Packed:
    """Write the deterministic tar of ``root`` to ``destination``; its digest and size."""
    with tarfile.open(destination, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in entries(root):
            info = path.lstat()
            member = tarfile.TarInfo(name)
            member.mode = stat.S_IMODE(info.st_mode) & 0o777
            member.mtime = 0
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            if stat.S_ISDIR(info.st_mode):
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
            else:
                member.size = info.st_size
                with path.open("rb") as handle:
                    tar.addfile(member, handle)
    digest = hashlib.sha256()
    with destination.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return Packed(destination, digest.hexdigest(), destination.stat().st_size)
