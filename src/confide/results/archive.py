"""The result zip: built deterministically, extracted defensively.

Built: the result directory's regular files sorted by path, each with the same time stamp
(1980-01-01), Unix mode 0644 (0755 when the owner could execute it), deflated (zlib's
default level), and ``.confide/salt`` in its sorted place; no directory entries. The same
files and salt give the same bytes (with the same zlib).

Extracted: every entry is checked before a byte is written — a relative path with no
``..``, no absolute, drive or backslash path, a regular file (a zip's external attributes
can declare a symlink: refused), no encryption flag, stored or deflated only, at most
``max_files`` entries — and the bytes written are counted as they are decompressed, so an
archive that expands past ``max_bytes`` is stopped there whatever its headers claim.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

from confide.results.digest import SALT_NAME, ResultError, check_name, result_files

_EPOCH = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20
MAX_FILES = 10_000
MAX_BYTES = 1 << 30
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# what reading a hostile zip can raise from the standard library (all become ResultError)
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    struct.error,
    zlib.error,
)


def _entry(name: str, executable: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.create_system = 3  # Unix: external_attr carries the mode
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_inner_zip(out_dir: Path, dest: Path, salt: bytes) -> list[str]:
    """Write ``out_dir``'s files and the salt as a deterministic zip at ``dest``; the
    names written (the salt's last)."""
    if (out_dir / ".confide").exists() or (out_dir / ".confide").is_symlink():
        raise ResultError("the result directory holds .confide, a name confide keeps for itself")
    names = result_files(out_dir)
    if len(names) >= MAX_FILES:
        raise ResultError(f"the result has {len(names)} files: at most {MAX_FILES - 1}")
    entries = sorted([*names, SALT_NAME], key=lambda n: n.encode("utf-8"))
    with zipfile.ZipFile(dest, "w", allowZip64=True) as archive:
        for name in entries:
            if name == SALT_NAME:
                archive.writestr(_entry(name, False), salt.hex() + "\n")
                continue
            path = out_dir / name
            executable = bool(path.lstat().st_mode & stat.S_IXUSR)
            with (
                path.open("rb") as source,
                archive.open(_entry(name, executable), "w", force_zip64=True) as target,
            ):
                while block := source.read(_CHUNK):
                    target.write(block)
    return [*names, SALT_NAME]


def _check_entry(info: zipfile.ZipInfo) -> str | None:
    """The entry's checked path, or None for a directory entry (nothing to write)."""
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)
    if info.flag_bits & 0x1:
        raise ResultError(f"archive entry {name!r} is encrypted: refused")
    if info.compress_type not in _METHODS:
        raise ResultError(f"archive entry {name!r} uses compression {info.compress_type}")
    if name.endswith("/") or kind == stat.S_IFDIR:
        check_name(name.rstrip("/"))
        return None
    if kind not in (0, stat.S_IFREG):
        what = "a symlink" if kind == stat.S_IFLNK else "not a regular file"
        raise ResultError(f"archive entry {name!r} is {what}: refused")
    return check_name(name)


def extract_zip(
    archive_path: Path, dest: Path, *, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES
) -> list[str]:
    """Extract ``archive_path`` into the empty directory ``dest``; the file names written.
    Anything unsafe is ResultError naming the entry (what was written stays in ``dest``:
    the caller extracts into a directory of its own and removes it)."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except ZIP_ERRORS as exc:
        raise ResultError(f"the result archive is not a readable zip ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files:
            raise ResultError(f"the result archive has {len(infos)} entries: at most {max_files}")
        checked = [(_check_entry(info), info) for info in infos]
        _check_unique([name for name, _info in checked if name is not None])
        written, total = [], 0
        for name, info in checked:
            if name is None:
                continue
            target = dest / name
            make_parents(dest, target.parent)
            total = _copy_entry(archive, info, target, total, max_bytes)
            written.append(name)
    return written


def _check_unique(names: list[str]) -> None:
    """No name twice, none under another entry that is a file."""
    files: set[str] = set()
    for name in names:
        if name in files:
            raise ResultError(f"archive entry {name!r} is there twice")
        files.add(name)
    for name in files:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in files:
                raise ResultError(f"archive entry {name!r} lies under a file")


def _copy_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, total: int, max_bytes: int
) -> int:
    """Decompress one entry to ``target`` (a new file), counting the bytes really written
    against ``max_bytes`` with ``total`` written before; the new total."""
    name = info.filename
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    mode = 0o755 if (info.external_attr >> 16) & stat.S_IXUSR else 0o644
    try:
        with archive.open(info) as source, os.fdopen(os.open(target, flags, mode), "wb") as out:
            while block := source.read(_CHUNK):
                total += len(block)
                if total > max_bytes:
                    raise ResultError(
                        f"the result archive expands past {max_bytes} bytes (at {name!r}): refused"
                    )
                out.write(block)
    except FileExistsError:
        raise ResultError(f"archive entry {name!r} is there twice") from None
    except ZIP_ERRORS as exc:
        raise ResultError(f"archive entry {name!r} does not read back ({exc})") from None
    return total


def make_parents(root: Path, parent: Path) -> None:
    """Create ``parent`` under ``root`` one component at a time, never through a link."""
    current = root
    for part in parent.relative_to(root).parts:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            current.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(mode):
            raise ResultError(
                f"{current.relative_to(root)} is not a directory (a link or a file): not extracted"
            )
