"""Key objects that do not leak: no value in repr, no pickling, explicit export only."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import NoReturn

from confide.errors import KeyFileError

KEY_BYTES = 32
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


class Redacted:
    """Base of every object that holds key material: no value in repr, no pickling."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key objects cannot be pickled")


class SymmetricKey(Redacted):
    """A 256-bit secret key.

    The value is reachable only through :meth:`expose`, so that an accidental ``print``,
    log line, f-string or pickle never carries it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if len(value) != KEY_BYTES:
            raise KeyFileError(f"a key is {KEY_BYTES} bytes, got {len(value)}")
        self._value = bytes(value)

    @classmethod
    def generate(cls) -> SymmetricKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_hex(cls, text: str) -> SymmetricKey:
        """Parse 64 lower-case hex characters (surrounding white space ignored)."""
        value = text.strip()
        if not _HEX_KEY.fullmatch(value):
            raise KeyFileError("a key is 64 lower-case hex characters")
        return cls(bytes.fromhex(value))

    def expose(self) -> bytes:
        """The raw key bytes, for the crypto layer only."""
        return self._value

    def to_hex(self) -> str:
        """The key as stored in a key file (without the newline)."""
        return self._value.hex()


def read_key_file(path: Path) -> SymmetricKey:
    """Read a key file: 64 lower-case hex characters and a newline.

    The file's content is never echoed in an error message.
    """
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not a key file (not ASCII)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        return SymmetricKey.from_hex(text)
    except KeyFileError:
        raise KeyFileError(
            f"key file {path} is malformed: expected 64 lower-case hex characters"
        ) from None


def key_file_is_private(path: Path) -> bool:
    """Whether nobody but the owner can read or write the key file."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def write_key_file(path: Path, key: SymmetricKey) -> None:
    """Create ``path`` with mode 0600 holding ``key``; never overwrites an existing file."""
    write_secret_file(
        path,
        (key.to_hex() + "\n").encode("ascii"),
        overwrite=False,
        exists=f"key file {path} already exists; not overwritten",
    )


def write_secret_file(path: Path, data: bytes, *, overwrite: bool, exists: str) -> None:
    """Write ``data`` to ``path`` with mode 0600, complete or not at all.

    The bytes go to a temporary name (O_EXCL), are fsynced, and are then linked into place
    (so an existing file is never replaced: KeyFileError(``exists``)) or, with
    ``overwrite``, renamed over it. A reader never sees half a key and a crash never leaves
    one behind.
    """
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyFileError(exists) from None
    finally:
        tmp.unlink(missing_ok=True)
