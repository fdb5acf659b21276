"""Opening a stored result: decrypt (when encrypted), extract safely, check the digest.

Everything happens in a private directory made inside ``dest_dir``; only once every entry
extracted within the limits and the salted digest of the files matched are they moved
into place (never through a symlink, never over a path the caller keeps, such as the
downloaded zip itself), so a refused archive leaves nothing of itself in ``dest_dir``.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from confide.results.archive import MAX_BYTES, MAX_FILES, extract_zip, make_parents
from confide.results.digest import SALT_NAME, ResultError, digest_of, parse_salt
from confide.results.sealed import decrypt_result, is_encrypted, load_private_key


@dataclass(frozen=True)
class OpenedResult:
    names: tuple[str, ...]  # relative paths of the result's files, SALT_NAME included
    salt: bytes
    result_digest: str  # salted digest of the files (SALT_NAME left out)
    encrypted: bool


def read_result(
    stored: Path,
    work: Path,
    *,
    task_id: str,
    result_private_key_path: Path | None,
    max_bytes: int = MAX_BYTES,
    max_files: int = MAX_FILES,
) -> OpenedResult:
    """Decrypt and extract ``stored`` into the empty directory ``work`` and digest it."""
    encrypted = is_encrypted(stored)
    inner = stored
    if encrypted:
        if result_private_key_path is None:
            raise ResultError(
                "the result is encrypted to your result key: none was given (it is kept at "
                "$CONFIDE_HOME/result-key)"
            )
        key = load_private_key(result_private_key_path)
        inner = work.parent / f".{work.name}.inner.zip"
        decrypt_result(stored, inner, task_id=task_id, private_key=key)
    try:
        names = extract_zip(inner, work, max_bytes=max_bytes, max_files=max_files)
    finally:
        if encrypted:
            inner.unlink(missing_ok=True)
    if SALT_NAME not in names:
        raise ResultError(f"the result archive has no {SALT_NAME}: not a confide result")
    salt = parse_salt((work / SALT_NAME).read_bytes())
    files = [n for n in names if n != SALT_NAME]
    return OpenedResult(tuple(names), salt, digest_of(work, files, salt), encrypted)


def open_result(
    stored: Path,
    dest_dir: Path,
    *,
    task_id: str,
    result_private_key_path: Path | None,
    max_bytes: int = MAX_BYTES,
    max_files: int = MAX_FILES,
    expected_digest: str | None = None,
    keep: Collection[str] = (),
) -> list[Path]:
    """Decrypt (when encrypted: the key is needed, else ResultError saying which), extract
    safely into ``dest_dir`` and return the paths written. With ``expected_digest`` (the
    signed statement's), files whose salted digest differs are refused; ``keep`` names
    paths in ``dest_dir`` an entry may not replace."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".confide-open-", dir=dest_dir))
    try:
        opened = read_result(
            stored,
            work,
            task_id=task_id,
            result_private_key_path=result_private_key_path,
            max_bytes=max_bytes,
            max_files=max_files,
        )
        if expected_digest is not None and opened.result_digest != expected_digest:
            raise ResultError(
                "result-digest: the archive's files do not match the salted digest the "
                "enclave signed"
            )
        kept = {os.path.normpath(k) for k in keep}
        for name in opened.names:
            if os.path.normpath(name) in kept:
                raise ResultError(f"archive entry {name!r} would replace {name}: refused")
        # nothing in dest_dir is ever replaced by what an archive says (a result is the
        # app's output: it could name .bashrc): an existing file with the same bytes is
        # left as it is (a second download), one that differs refuses the whole
        # extraction before anything is moved
        placed = []
        for name in opened.names:
            target = dest_dir / name
            if _place(dest_dir, target, work / name):
                placed.append(name)
        for name in placed:
            os.replace(work / name, dest_dir / name)
        return [dest_dir / name for name in opened.names]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _place(root: Path, target: Path, new: Path) -> bool:
    """Make ``target``'s parents under ``root`` (never through a link); whether ``new``
    is to be moved there (False: ``target`` already holds the same bytes). ResultError
    when ``target`` exists and is not a regular file with those bytes."""
    make_parents(root, target.parent)
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return True
    if not stat.S_ISREG(mode):
        raise ResultError(f"{target} exists and is not a regular file: not replaced")
    if not _same_bytes(target, new):
        raise ResultError(
            f"{target} exists and differs from the result's {target.relative_to(root)}: "
            f"nothing was extracted (download into an empty directory)"
        )
    return False


def _same_bytes(one: Path, other: Path) -> bool:
    if one.stat().st_size != other.stat().st_size:
        return False
    with one.open("rb") as left, other.open("rb") as right:
        while True:
            a, b = left.read(1 << 20), right.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True
