"""Blobs in a local directory: ``ROOT/ab/abcdef…`` (the digest's first two characters
spread files over 256 directories).

A blob is written to a temporary file in ``ROOT/tmp`` (the same file system), flushed
with ``fsync``, renamed to its digest and its directory flushed too: a crash leaves
either no file or the whole blob under a digest, never a part of one. Temporary files
that a crash left behind are removed at start. While a blob arrives, its pages are
handed to the disk every 16 MiB (``sync_file_range``, which does not wait), so the
closing fsync waits for the last few only. A full disk (``ENOSPC``, ``EDQUOT``) is
:class:`StorageFullError`, with the temporary file removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from confide.storage.backend import (
    CHUNK,
    BackendUnavailableError,
    BlobNotFoundError,
    ByteRange,
    CheckedStream,
    StorageFullError,
    check_digest,
)

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
WRITEBACK = 16 << 20  # bytes written between two starts of their writeback to the disk
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range`` (None elsewhere): starts writing a range of a file to
    the disk without waiting, so the final fsync has only the tail left to wait for (the
    disk writes while the network still brings the rest)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_WRITEBACK = _sync_file_range()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    if _WRITEBACK is not None:
        _WRITEBACK(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a failure: fsync says so


class LocalBackend:
    """The local-directory :class:`~confide.storage.backend.Backend`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temporary = root / "tmp"
        self.temporary.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.temporary.iterdir():  # a crash's; never under a digest
            with contextlib.suppress(OSError):
                leftover.unlink()

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def put(
        self,
        digest: str,
        size: int,
        chunks: Iterable[bytes],
        before_publish: Callable[[], None] | None = None,
    ) -> None:
        target = self.path(digest)
        checked = CheckedStream(digest, size, chunks)
        temporary = self.temporary / f"{digest}.{os.urandom(8).hex()}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _failure(exc, "cannot create a temporary file") from None
        published = False
        try:
            try:
                with os.fdopen(fd, "wb", buffering=0) as handle:
                    flushed = written = 0
                    for chunk in checked:
                        _write_all(handle.fileno(), chunk)
                        written += len(chunk)
                        if written - flushed >= WRITEBACK:
                            _start_writeback(handle.fileno(), flushed, written - flushed)
                            flushed = written
                    checked.verify()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise _failure(exc, f"cannot write blob {digest}") from None
            if before_publish is not None:
                before_publish()
            try:
                target.parent.mkdir(exist_ok=True, mode=0o700)
                os.rename(temporary, target)
                published = True
                _fsync_directory(target.parent)
            except OSError as exc:
                raise _failure(exc, f"cannot publish blob {digest}") from None
        finally:
            if not published:
                with contextlib.suppress(OSError):
                    temporary.unlink()

    def read(self, digest: str, byte_range: ByteRange | None = None) -> Iterator[bytes]:
        path = self.path(digest)
        try:
            handle = io.FileIO(path, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {digest}") from None
        except OSError as exc:
            raise _failure(exc, f"cannot read blob {digest}") from None
        return _chunks(handle, byte_range)

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _failure(exc, f"cannot read blob {digest}") from None

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()


def _chunks(handle: io.FileIO, byte_range: ByteRange | None) -> Iterator[bytes]:
    """A file's bytes from an open handle (closed at the end or when abandoned)."""
    with handle:
        fd = handle.fileno()
        position = 0 if byte_range is None else byte_range.start
        remaining = -1 if byte_range is None else byte_range.length
        while remaining != 0:
            want = CHUNK if remaining < 0 else min(CHUNK, remaining)
            chunk = os.pread(fd, want, position)
            if not chunk:
                return
            position += len(chunk)
            if remaining > 0:
                remaining -= len(chunk)
            yield chunk


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _failure(exc: OSError, what: str) -> Exception:
    if exc.errno in _FULL:
        return StorageFullError(f"{what}: the blob directory is full ({os.strerror(exc.errno)})")
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return BackendUnavailableError(f"{what}: {reason}")
