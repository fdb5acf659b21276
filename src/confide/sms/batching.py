"""Work that arrives together, done together: one statement for a batch of HEAD checks,
one transaction for a batch of attestation grants.

A HEAD check of a secret the sms has not seen exist reads the database. Each read costs
far more in the driver, the pool and a thread hand-off than in the database itself, so
checks that wait at the same time are read in one statement (:class:`Coalescer`): while
a batch is being read, the checks that arrive queue for the next one. Grants are
recorded the same way, many to a transaction (a group commit).

A key joins only a batch that has not started: its read begins after the request
arrived, so it sees every write committed before the request, as a read of its own
would (a client that pushed a secret and then checks it is told it is set).
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Load = Callable[[list[K]], Awaitable[Mapping[K, V]]]  # the keys of a batch -> their values
Waiting = dict[K, list["asyncio.Future[Any]"]]


def membership(found: Callable[[list[K]], Awaitable[Collection[K]]]) -> Load[K, bool]:
    """A load for "is ``key`` there?" from one that returns the keys found."""

    async def load(keys: list[K]) -> Mapping[K, bool]:
        present = await found(keys)
        return {key: key in present for key in keys}

    return load


class _LoopState(Generic[K]):
    """What one event loop's callers share: a future is answered on its own loop only."""

    def __init__(self) -> None:
        self.pending: Waiting[K] = {}
        self.lanes: set[asyncio.Task[None]] = set()  # running, and a strong reference


class Coalescer(Generic[K, V]):
    """Answers ``key`` for concurrent callers, loading pending keys in batches of at most
    ``limit``, with at most ``lanes`` batches being loaded at once (per event loop: a
    server runs one; a test client may run one per request). Callers with equal keys
    share one load.

    A batch that fails fails each caller in it (with the same exception); the next batch
    is loaded as usual. A caller that gave up (its task was cancelled) is left out of
    the answer; the batch goes on for the others.
    """

    def __init__(self, load: Load[K, V], *, lanes: int, limit: int) -> None:
        if lanes < 1 or limit < 1:
            raise ValueError("a coalescer needs at least one lane and one key per batch")
        self._load = load
        self._lanes = lanes
        self._limit = limit
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState[K]]
        self._states = weakref.WeakKeyDictionary()

    async def get(self, key: K) -> V:
        """``key``'s value, loaded in the next batch that starts."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        future: asyncio.Future[V] = loop.create_future()
        state.pending.setdefault(key, []).append(future)
        self._start_lane(loop, state)
        return await future

    def waiting(self) -> int:
        """Callers queued for a batch that has not started, on this loop (for tests)."""
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
        # A key whose callers all gave up is not loaded: for a grant, loading is recording
        # it (its nonce used up, its lease spent) with nobody left to receive it.
        waiting = {
            k: futures for k, futures in waiting.items() if not all(f.done() for f in futures)
        }
        keys = list(waiting)
        if not keys:
            return
        try:
            values = await self._load(keys)
        except Exception as exc:  # the database: each caller answers it (503)
            _settle(waiting, exc)
            return
        except BaseException:  # cancelled (shutdown), or the process is exiting
            _settle(waiting, None)
            raise
        for key, futures in waiting.items():
            for future in futures:
                if future.done():
                    continue
                if key in values:
                    future.set_result(values[key])
                else:
                    future.set_exception(LookupError("the batch's load left this key out"))


def _settle(waiting: Waiting[K], exc: Exception | None) -> None:
    """Fail each caller of a batch with ``exc``; cancel them when ``exc`` is None."""
    for futures in waiting.values():
        for future in futures:
            if future.done():
                continue
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)
