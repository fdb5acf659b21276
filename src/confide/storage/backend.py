"""Where a blob's bytes live, behind one interface: a local directory or an S3 bucket.

A backend stores bytes under their SHA-256 and nothing else: who uploaded a blob, its
grants and the quotas are the database's (:mod:`confide.storage.service`). Every backend
keeps one promise: a blob is visible under its digest only once every byte has arrived
and hashed to that digest, so neither a crash, a full disk, a short body nor a lying
client leaves a partial or wrong blob under a digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from confide.errors import StorageError

CHUNK = 1 << 20  # bytes read from or written to a backend at once
_DIGEST = re.compile(r"[0-9a-f]{64}")


class BlobNotFoundError(StorageError):
    """No blob under this digest (or the caller may not know that it exists)."""


class DigestMismatchError(StorageError):
    """The bytes received do not hash to the digest they were sent under."""


class SizeMismatchError(StorageError):
    """More or fewer bytes arrived than announced."""


class StorageFullError(StorageError):
    """The backend has no room for the blob (a full disk, a full or refusing bucket)."""


class BackendUnavailableError(StorageError):
    """The backend failed (an unreachable or missing bucket, an I/O error)."""


def check_digest(digest: str) -> str:
    """``digest`` if it is a SHA-256 in 64 lower-case hex; StorageError otherwise."""
    if not _DIGEST.fullmatch(digest):
        raise StorageError("a blob is named by its SHA-256: 64 lower-case hex characters")
    return digest


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive (HTTP's convention)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Backend(Protocol):
    """Blob bytes by digest. Every method may raise :class:`BackendUnavailableError`."""

    def put(
        self,
        digest: str,
        size: int,
        chunks: Iterable[bytes],
        before_publish: Callable[[], None] | None = None,
    ) -> None:
        """Store ``chunks`` under ``digest``: exactly ``size`` bytes hashing to it, else
        :class:`SizeMismatchError` or :class:`DigestMismatchError`, and nothing kept.
        ``before_publish`` runs once the bytes are all in and checked, before they are
        visible under the digest; if it raises, nothing is kept and the error goes on.
        No room: :class:`StorageFullError`, nothing kept."""
        ...

    def read(self, digest: str, byte_range: ByteRange | None = None) -> Iterator[bytes]:
        """The blob's bytes (or ``byte_range`` of them), in chunks of at most
        :data:`CHUNK`; :class:`BlobNotFoundError` (from this call) when absent."""
        ...

    def size(self, digest: str) -> int | None:
        """The stored blob's size, None when there is none."""
        ...

    def delete(self, digest: str) -> None:
        """Remove the blob (nothing when absent)."""
        ...


class CheckedStream:
    """``chunks`` passed through while they are counted and hashed: more than ``size``
    bytes stops the stream at once (:class:`SizeMismatchError`), and :meth:`verify`
    checks the total and the digest at the end."""

    def __init__(self, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        self.digest = digest
        self.size = size
        self.chunks = chunks
        self.received = 0
        self.hash = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.received += len(chunk)
            if self.received > self.size:
                raise SizeMismatchError(f"more than the announced {self.size} bytes arrived")
            self.hash.update(chunk)
            yield chunk

    def verify(self) -> None:
        if self.received != self.size:
            raise SizeMismatchError(f"{self.received} bytes arrived, {self.size} were announced")
        found = self.hash.hexdigest()
        if found != self.digest:
            raise DigestMismatchError(
                f"the bytes received hash to {found}, not to {self.digest}: nothing was kept"
            )


def consume(digest: str, size: int, chunks: Iterable[bytes]) -> None:
    """Read ``chunks`` and check them without storing them (a blob stored already)."""
    checked = CheckedStream(digest, size, chunks)
    for _ in checked:
        pass
    checked.verify()


def rechunk(chunks: Iterable[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """``chunks`` regrouped into pieces of ``size`` bytes (the last one shorter)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)
