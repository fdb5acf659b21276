"""Lookups that arrive together, read together: one statement for a batch of HEAD checks.

A HEAD check of a secret the sms has not seen exist reads the database. Each read costs
far more in the driver, the pool and a thread hand-off than in the database itself, so
checks that wait at the same time are read in one statement (:class:`Coalescer`): while
a batch is being read, the checks that arrive queue for the next one.

A check joins only a batch that has not started: its read begins after the request
arrived, so it sees every write committed before the request, as a read of its own
would (a client that pushed a secret and then checks it is told it is set).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

Load = Callable[[list[K]], Awaitable[set[K]]]  # the keys of a batch -> those found


class Coalescer(Generic[K]):
    """Answers "is ``key`` there?" for concurrent callers, reading pending keys in batches
    of at most ``limit``, with at most ``lanes`` batches being read at once.

    A batch that fails fails each check in it (with the same exception); the next batch
    is read as usual. A check whose caller gave up (its task was cancelled) is left out
    of the answer; the batch goes on for the others.
    """

    def __init__(self, load: Load[K], *, lanes: int, limit: int) -> None:
        if lanes < 1 or limit < 1:
            raise ValueError("a coalescer needs at least one lane and one key per batch")
        self._load = load
        self._lanes = lanes
        self._limit = limit
        self._pending: dict[K, list[asyncio.Future[bool]]] = {}
        # Lanes reading or about to: counted down by the lane itself, in the same step in
        # which it finds nothing left to read (a task's done callback runs later: a check
        # arriving in between would wait for a lane that is gone).
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()  # a strong reference to each lane

    async def found(self, key: K) -> bool:
        """Whether ``key`` is there, read in the next batch that starts."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        if self._active < self._lanes:
            self._active += 1
            lane = asyncio.get_running_loop().create_task(self._lane())
            self._tasks.add(lane)
            lane.add_done_callback(self._tasks.discard)
        return await future

    async def _lane(self) -> None:
        """Read batches while checks are waiting. Each turn first lets the event loop run
        once, so the checks that arrived together (one poll of the sockets) share it."""
        try:
            while True:
                await asyncio.sleep(0)
                if not self._pending:
                    return
                await self._read_one_batch()
        finally:
            self._active -= 1

    async def _read_one_batch(self) -> None:
        keys = list(self._pending)[: self._limit]
        waiting = {key: self._pending.pop(key) for key in keys}
        try:
            present = await self._load(keys)
        except asyncio.CancelledError:
            _settle(waiting, None)
            raise
        except Exception as exc:  # the database: each check answers it (503)
            _settle(waiting, exc)
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(key in present)

    def waiting(self) -> int:
        """Checks queued for a batch that has not started (for tests)."""
        return sum(len(futures) for futures in self._pending.values())


def _settle(waiting: dict[K, list[asyncio.Future[bool]]], exc: Exception | None) -> None:
    """Fail each check of a batch with ``exc``; cancel them when ``exc`` is None."""
    for futures in waiting.values():
        for future in futures:
            if future.done():
                continue
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)
