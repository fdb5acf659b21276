"""Sealing and opening segments on every core with bounded memory.

Work is cut into *pieces* (a range of segments of one file) and pieces into *batches*
(several whole small files, or a slice of a large one), so that 10,000 small files and a
single 4 GiB file both keep every core busy. Each thread owns two segment-sized buffers
and reads, seals or opens, hashes and writes in place (``preadv``/``pwritev`` and
AES-GCM ``*_into`` release the GIL), so memory stays at a few MiB per thread whatever
the file sizes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from confide.crypto.segment import SegmentAuthenticationError, SegmentCipher
from confide.errors import IntegrityError, VolumeError
from confide.volume.format import SEALED_SEGMENT_SIZE, SEGMENT_SIZE, segment_count

BATCH_SEGMENTS = 8
BATCH_FILES = 64
T = TypeVar("T")
_OPEN_FLAGS = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class Piece:
    """Segments ``first`` to ``stop`` (exclusive) of file number ``file``."""

    file: int
    first: int
    stop: int


def plan_batches(sizes: Sequence[int]) -> list[list[Piece]]:
    """Group the segments of files of the given sizes into batches of similar work."""
    batches: list[list[Piece]] = []
    current: list[Piece] = []
    weight = 0
    for index, size in enumerate(sizes):
        count = segment_count(size)
        for first in range(0, count, BATCH_SEGMENTS):
            stop = min(count, first + BATCH_SEGMENTS)
            current.append(Piece(index, first, stop))
            weight += stop - first
            if weight >= BATCH_SEGMENTS or len(current) >= BATCH_FILES:
                batches.append(current)
                current, weight = [], 0
    if current:
        batches.append(current)
    return batches


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.data = bytearray(SEALED_SEGMENT_SIZE)
        self.sealed = bytearray(SEALED_SEGMENT_SIZE)


_buffers = _Buffers()


def _read_exact(fd: int, view: memoryview, offset: int) -> bool:
    """Fill ``view`` from ``offset``; False when the file ends first."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            return False
        done += got
    return True


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwritev(fd, [view[done:]], offset + done)


def seal_piece(
    source: str, target: str, size: int, cipher: SegmentCipher, piece: Piece
) -> list[bytes]:
    """Seal a piece of ``source`` into the object file ``target``; return segment hashes."""
    data, sealed = memoryview(_buffers.data), memoryview(_buffers.sealed)
    count = segment_count(size)
    hashes: list[bytes] = []
    fd_in = os.open(source, os.O_RDONLY | _OPEN_FLAGS)
    try:
        fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            for index in range(piece.first, piece.stop):
                offset = index * SEGMENT_SIZE
                length = min(SEGMENT_SIZE, size - offset)
                if not _read_exact(fd_in, data[:length], offset):
                    raise VolumeError(f"{source} shrank while it was being encrypted")
                written = cipher.seal_into(
                    index, index == count - 1, data[:length], _buffers.sealed
                )
                hashes.append(hashlib.sha256(sealed[:written]).digest())
                _write_all(fd_out, sealed[:written], index * SEALED_SEGMENT_SIZE)
            if piece.stop == count and os.pread(fd_in, 1, size):
                raise VolumeError(f"{source} grew while it was being encrypted")
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)
    return hashes


def open_piece(
    source: str, target: str | None, size: int, cipher: SegmentCipher, piece: Piece
) -> list[bytes]:
    """Authenticate and decrypt a piece of object ``source`` into ``target`` (or nowhere).

    Raises SegmentAuthenticationError on any authentication failure.
    """
    data, sealed = memoryview(_buffers.data), memoryview(_buffers.sealed)
    count = segment_count(size)
    hashes: list[bytes] = []
    fd_in = os.open(source, os.O_RDONLY | _OPEN_FLAGS)
    fd_out = -1
    try:
        if target is not None:
            fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for index in range(piece.first, piece.stop):
            length = min(SEGMENT_SIZE, size - index * SEGMENT_SIZE)
            view = sealed[: length + SEALED_SEGMENT_SIZE - SEGMENT_SIZE]
            if not _read_exact(fd_in, view, index * SEALED_SEGMENT_SIZE):
                raise SegmentAuthenticationError
            hashes.append(hashlib.sha256(view).digest())
            opened = cipher.open_into(index, index == count - 1, view, _buffers.data)
            if fd_out >= 0:
                _write_all(fd_out, data[:opened], index * SEGMENT_SIZE)
    finally:
        if fd_out >= 0:
            os.close(fd_out)
        os.close(fd_in)
    return hashes


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def run_batches(
    batches: Sequence[list[Piece]],
    work: Callable[[Piece], T],
    workers: int,
    on_piece: Callable[[Piece, T], None],
) -> None:
    """Run ``work`` on every piece, ``workers`` threads at a time, in a bounded window.

    ``on_piece`` runs on the calling thread. On the first error no new batch starts, the
    running ones finish, and the error is raised: nothing writes behind the caller's back
    once this returns or raises.
    """

    def run(batch: list[Piece]) -> list[tuple[Piece, T]]:
        return [(piece, work(piece)) for piece in batch]

    window = workers * 4
    queue: Iterator[list[Piece]] = iter(batches)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="confide-volume") as pool:
        running: set[Future[list[tuple[Piece, T]]]] = set()
        failure: BaseException | None = None
        try:
            for batch in queue:
                running.add(pool.submit(run, batch))
                if len(running) < window:
                    continue
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    for piece, result in future.result():
                        on_piece(piece, result)
            for future in running:
                for piece, result in future.result():
                    on_piece(piece, result)
        except BaseException as exc:
            failure = exc
        if failure is not None:
            for future in running:
                future.cancel()
            wait(running)
            raise failure


def integrity_failure(volume: str, path: str) -> IntegrityError:
    return IntegrityError(f"volume {volume}: file {path!r} failed authentication")
