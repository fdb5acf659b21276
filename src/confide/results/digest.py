"""The salted result digest: what the enclave's statement says the result directory held.

``result_digest(dir, salt)`` is SHA-256 over an unambiguous, sorted manifest of the
directory's regular files::

    lp("confide-result-digest-v1") || lp(salt) || u64(count)
      || for each file, sorted by its UTF-8 path: lp(path) || u64(size) || sha256(content)

Paths are relative, ``/``-separated; directories add nothing (an empty one is not part of
the result). The salt (32 random bytes, made by the enclave) travels inside the encrypted
archive as ``.confide/salt`` and is itself left out of the manifest: without it nobody can
test a guess ("is the result f(3) = 56?") against the public statement.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Iterable
from pathlib import Path

from confide.crypto.encoding import lp
from confide.errors import ConfideError

SALT_NAME = ".confide/salt"  # inside the inner archive: hex of the 32-byte salt
SALT_BYTES = 32
_LABEL = b"confide-result-digest-v1"
_CHUNK = 1 << 20
MAX_PATH_BYTES = 1024  # a result path, whole (each component at most 255 bytes)
MAX_COMPONENT_BYTES = 255


class ResultError(ConfideError):
    """A result cannot be built, opened or verified; the message names what and where."""


def check_name(name: str) -> str:
    """``name`` if it is a safe relative result path (``a/b.txt``); ResultError otherwise."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        raise ResultError(f"result path {name!r} is not a relative path")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ResultError(f"result path {name[:80]!r}… is longer than {MAX_PATH_BYTES} bytes")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ResultError(f"result path {name!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise ResultError(
                f"result path {name[:80]!r} has a name longer than {MAX_COMPONENT_BYTES} bytes"
            )
    if len(name) >= 2 and name[1] == ":":
        raise ResultError(f"result path {name!r} looks like a drive path")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ResultError(f"result path {name!r} is not valid UTF-8") from None
    return name


def result_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a sorted relative path (SALT_NAME left out);
    a symlink, device, socket or fifo anywhere is refused, naming it."""
    if not root.is_dir():
        raise ResultError(f"{root} is not a directory")
    found: list[str] = []

    def refuse(error: OSError) -> None:
        raise ResultError(f"cannot read {error.filename}: {error.strerror}")

    for directory, subdirs, names in os.walk(root, onerror=refuse):
        for name in [*subdirs, *names]:
            full = Path(directory, name)
            mode = full.lstat().st_mode
            relative = full.relative_to(root).as_posix()
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise ResultError(
                    f"{relative} in the result is not a regular file (links, devices, "
                    f"sockets and fifos are refused)"
                )
            if relative != SALT_NAME:
                found.append(check_name(relative))
    return sorted(found, key=lambda n: n.encode("utf-8"))


def digest_of(root: Path, names: Iterable[str], salt: bytes) -> str:
    """The salted digest over the files ``names`` (relative to ``root``), whatever else
    ``root`` holds; a missing or non-regular file is ResultError naming it."""
    if len(salt) != SALT_BYTES:
        raise ResultError(f"a result salt is {SALT_BYTES} bytes, got {len(salt)}")
    ordered = sorted(set(names), key=lambda n: n.encode("utf-8"))
    hasher = hashlib.sha256(lp(_LABEL) + lp(salt) + struct.pack(">Q", len(ordered)))
    for name in ordered:
        path = root / check_name(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ResultError(f"{name} is missing from {root}") from None
        except OSError as exc:
            raise ResultError(f"cannot read {name} in {root}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ResultError(f"{name} in {root} is not a regular file")
            content, size = hashlib.sha256(), 0
            while block := handle.read(_CHUNK):
                content.update(block)
                size += len(block)
        hasher.update(lp(name.encode("utf-8")) + struct.pack(">Q", size) + content.digest())
    return hasher.hexdigest()


def result_digest(out_dir: Path, salt: bytes) -> str:
    """Hex SHA-256 of the salted, sorted manifest of ``out_dir``'s regular files."""
    return digest_of(out_dir, result_files(out_dir), salt)


def parse_salt(text: bytes) -> bytes:
    """The salt of a ``.confide/salt`` file (64 lower-case hex, optional newline)."""
    value = text.strip()
    if len(value) != 2 * SALT_BYTES or not all(c in b"0123456789abcdef" for c in value):
        raise ResultError(f"{SALT_NAME} is not {2 * SALT_BYTES} lower-case hex characters")
    return bytes.fromhex(value.decode())
