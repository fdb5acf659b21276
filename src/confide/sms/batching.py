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
import itertools
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

Load = Callable[[list[K]], Awaitable[set[K]]]  # the keys of a batch -> those found
Waiting = dict[K, list["asyncio.Future[bool]"]]


class _LoopState(Generic[K]):
    """What one event loop's checks share: a future is answered on its own loop only."""

    def __init__(self) -> None:
        self.pending: Waiting[K] = {}
        self.lanes: set[asyncio.Task[None]] = set()  # running, and a strong reference


class Coalescer(Generic[K]):
    """Answers "is ``key`` there?" for concurrent callers, reading pending keys in batches
    of at most ``limit``, with at most ``lanes`` batches being read at once (per event
    loop: a server runs one; a test client may run one per request).

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
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState[K]]
        self._states = weakref.WeakKeyDictionary()

    async def found(self, key: K) -> bool:
        """Whether ``key`` is there, read in the next batch that starts."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        future: asyncio.Future[bool] = loop.create_future()
        state.pending.setdefault(key, []).append(future)
        self._start_lane(loop, state)
        return await future

    def waiting(self) -> int:
        """Checks queued for a batch that has not started, on this loop (for tests)."""
        state = self._states.get(asyncio.get_running_loop())
        return 0 if state is None else sum(map(len, state.pending.values()))

    def _start_lane(self, loop: asyncio.AbstractEventLoop, state: _LoopState[K]) -> None:
        if len(state.lanes) < self._lanes:
            lane = loop.create_task(self._lane(state))
            state.lanes.add(lane)
            lane.add_done_callback(lambda done: self._lane_done(loop, state, done))

    def _lane_done(
        self, loop: asyncio.AbstractEventLoop, state: _LoopState[K], lane: asyncio.Task[None]
    ) -> None:
        """A lane that ended without running (cancelled before its first step) leaves
        checks behind: they get a new lane, unless their callers are gone too."""
        state.lanes.discard(lane)
        for key in [k for k, futures in state.pending.items() if all(f.done() for f in futures)]:
            del state.pending[key]
        if state.pending and not loop.is_closed():
            self._start_lane(loop, state)

    async def _lane(self, state: _LoopState[K]) -> None:
        """Read batches while checks are waiting. Each turn first lets the event loop run
        once, so the checks that arrived together (one poll of the sockets) share it.
        The lane leaves the running set in the very step that finds nothing to read: a
        done callback runs a turn later, and a check arriving in between would wait for a
        lane that is gone."""
        try:
            while True:
                await asyncio.sleep(0)
                if not state.pending:
                    return
                await self._read_one_batch(state)
        finally:
            task = asyncio.current_task()
            if task is not None:
                state.lanes.discard(task)

    async def _read_one_batch(self, state: _LoopState[K]) -> None:
        keys = list(itertools.islice(state.pending, self._limit))
        waiting = {key: state.pending.pop(key) for key in keys}
        try:
            present = await self._load(keys)
        except Exception as exc:  # the database: each check answers it (503)
            _settle(waiting, exc)
            return
        except BaseException:  # cancelled (shutdown), or the process is exiting
            _settle(waiting, None)
            raise
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(key in present)


def _settle(waiting: Waiting[K], exc: Exception | None) -> None:
    """Fail each check of a batch with ``exc``; cancel them when ``exc`` is None."""
    for futures in waiting.values():
        for future in futures:
            if future.done():
                continue
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)
