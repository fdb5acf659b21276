"""Moving a blob's bytes between the event loop and the threads that write or read them,
a few pieces ahead, in bounded memory.

Upload: :class:`BodyPipe` reads the request body on the event loop into pieces of about
1 MiB and hands them to the thread that hashes and writes them, up to ``depth`` pieces
ahead, so the network and the disk work at the same time; it reads nothing until that
thread asks for the first piece (a refusal from the announced length reads no byte).
Download: :func:`read_ahead` reads the next piece from the backend on a thread while
the current one is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.requests import Request

from confide.storage.backend import CHUNK

DEPTH = 4  # pieces in flight per transfer: memory per transfer is about DEPTH MiB
_END = object()


class BodyPipe:
    """The request's body as an iterator of pieces for a worker thread. :meth:`pump`
    runs on the event loop (a task) and stops at the end of the body, on a failure
    (handed to the thread, which raises it: a client gone, a body too slow), or when
    cancelled once the thread is done."""

    def __init__(self, request: Request, depth: int = DEPTH) -> None:
        self.request = request
        self.loop = asyncio.get_running_loop()
        self.pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.room = asyncio.Semaphore(depth)
        self.wanted = asyncio.Event()

    def __iter__(self) -> Iterator[bytes]:
        self.loop.call_soon_threadsafe(self.wanted.set)
        while True:
            piece = self.pieces.get()
            if piece is _END:
                return
            if isinstance(piece, BaseException):
                raise piece
            self.loop.call_soon_threadsafe(self.room.release)
            yield piece

    async def pump(self) -> None:
        await self.wanted.wait()
        try:
            gathered: list[bytes] = []
            size = 0
            async for chunk in self.request.stream():
                if not chunk:
                    continue
                gathered.append(chunk)
                size += len(chunk)
                if size >= CHUNK:
                    await self._hand(b"".join(gathered))
                    gathered, size = [], 0
            if gathered:
                await self._hand(b"".join(gathered))
            self.pieces.put(_END)
        except asyncio.CancelledError:
            self.pieces.put(_END)  # the thread is done, or the request is being torn down
            raise
        except Exception as exc:  # the thread raises it, where the handler sees it
            self.pieces.put(exc)

    async def _hand(self, piece: bytes) -> None:
        await self.room.acquire()
        self.pieces.put(piece)


async def read_ahead(run: Callable[..., Any], opened: Iterator[bytes]) -> AsyncIterator[bytes]:
    """``opened``'s pieces, each next one read by ``run`` (on a thread) while the
    current one is sent; ``opened`` is closed at the end or when the client goes."""
    pending: asyncio.Future[Any] | None = None
    try:
        pending = asyncio.ensure_future(run(next, opened, None))
        while True:
            piece = await pending
            if piece is None:
                return
            pending = asyncio.ensure_future(run(next, opened, None))
            yield piece
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending  # the generator may not be closed while a thread runs it
        close = getattr(opened, "close", None)
        if close is not None:
            await run(close)
