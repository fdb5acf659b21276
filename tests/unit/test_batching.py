"""The coalescer of HEAD checks (confide.sms.batching), with a recording loader: which
keys each batch reads, and what each waiting check is told."""

from __future__ import annotations

import asyncio
import threading

import pytest

from confide.sms.batching import Coalescer, membership


class Loader:
    """Answers batches from ``present``; records each batch; a batch waits on ``gate``
    when one is set (a read in flight) and raises ``failure`` when one is set."""

    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.failure: Exception | None = None
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, keys: list[str]) -> set[str]:
        self.batches.append(list(keys))
        snapshot = set(self.present)  # what the read sees: the state when it began
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            if self.failure is not None:
                failure, self.failure = self.failure, None
                raise failure
            return {key for key in keys if key in snapshot}
        finally:
            self.in_flight -= 1


def test_checks_that_arrive_together_are_one_batch() -> None:
    async def scenario() -> None:
        load = Loader({"a", "c"})
        coalescer = Coalescer(membership(load), lanes=1, limit=32)
        answers = await asyncio.gather(*(coalescer.get(k) for k in ["a", "b", "c", "a"]))
        assert answers == [True, False, True, True]
        assert load.batches == [["a", "b", "c"]]  # one read, each key once

    asyncio.run(scenario())


def test_a_check_arriving_during_a_read_waits_for_the_next_batch() -> None:
    """A read already under way may have begun before a write the caller saw commit: the
    check must not take its answer (read-your-writes across a push and a HEAD)."""

    async def scenario() -> None:
        load = Loader(set())
        load.gate = asyncio.Event()
        coalescer = Coalescer(membership(load), lanes=1, limit=32)
        first = asyncio.ensure_future(coalescer.get("x"))
        while not load.batches:
            await asyncio.sleep(0)
        load.present.add("x")  # written, and committed, while the first read is out
        second = asyncio.ensure_future(coalescer.get("x"))
        await asyncio.sleep(0)
        assert coalescer.waiting() == 1
        load.gate.set()
        assert await first is False and await second is True
        assert load.batches == [["x"], ["x"]]

    asyncio.run(scenario())


def test_batches_respect_the_limit_and_the_lanes() -> None:
    async def scenario() -> None:
        load = Loader({f"k{i}" for i in range(0, 70, 2)})
        coalescer = Coalescer(membership(load), lanes=2, limit=8)
        keys = [f"k{i}" for i in range(70)]
        answers = await asyncio.gather(*(coalescer.get(k) for k in keys))
        assert answers == [i % 2 == 0 for i in range(70)]
        assert max(len(batch) for batch in load.batches) <= 8
        assert sorted(k for batch in load.batches for k in batch) == sorted(keys)
        assert load.most_in_flight == 2

    asyncio.run(scenario())


def test_a_failed_batch_fails_its_checks_and_the_next_batch_is_read() -> None:
    async def scenario() -> None:
        load = Loader({"a"})
        load.failure = ConnectionError("database unreachable")
        coalescer = Coalescer(membership(load), lanes=1, limit=32)
        results = await asyncio.gather(
            coalescer.get("a"), coalescer.get("b"), return_exceptions=True
        )
        assert all(isinstance(r, ConnectionError) for r in results)
        assert await coalescer.get("a") is True  # the retry is read again

    asyncio.run(scenario())


def test_a_caller_that_gives_up_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        load = Loader({"b"})
        load.gate = asyncio.Event()
        coalescer = Coalescer(membership(load), lanes=1, limit=32)
        gone = asyncio.ensure_future(coalescer.get("a"))
        staying = asyncio.ensure_future(coalescer.get("b"))
        while not load.batches:
            await asyncio.sleep(0)
        gone.cancel()
        load.gate.set()
        assert await staying is True
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(scenario())


def test_lanes_and_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        Coalescer(membership(Loader(set())), lanes=0, limit=1)
    with pytest.raises(ValueError, match="at least one lane"):
        Coalescer(membership(Loader(set())), lanes=1, limit=0)


def test_a_check_arriving_as_the_lane_stops_is_still_read() -> None:
    """One check after another, a few event-loop turns apart, so that one arrives just as
    the lane finds nothing more to read and stops: every one is answered (none waits
    for a lane that is gone)."""

    async def scenario() -> None:
        load = Loader({"a"})
        coalescer = Coalescer(membership(load), lanes=1, limit=4)
        async with asyncio.timeout(5):  # no task of its own: the arrivals' timing stays
            for turns in range(6):
                assert await coalescer.get("a") is True
                for _ in range(turns):
                    await asyncio.sleep(0)
                assert await coalescer.get("b") is False

    asyncio.run(scenario())


def _lanes(coalescer: Coalescer[str, bool]) -> set[asyncio.Task[None]]:
    """The lanes running on this loop (white box: what a shutdown would cancel)."""
    state = coalescer._states.get(asyncio.get_running_loop())
    return set() if state is None else set(state.lanes)


@pytest.mark.parametrize("caller_stays", [True, False])
def test_a_lane_cancelled_before_it_ran_leaves_no_check_waiting(caller_stays: bool) -> None:
    """A lane cancelled before its first step (as a shutdown cancels every task) never
    runs its own clean-up: the check it was made for gets a new lane, or, if its caller
    is gone too, the next check does."""

    async def scenario() -> None:
        coalescer = Coalescer(membership(Loader({"a", "b"})), lanes=1, limit=32)
        first = asyncio.ensure_future(coalescer.get("a"))
        await asyncio.sleep(0)  # found() ran: its lane is made, not yet started
        for lane in _lanes(coalescer):
            lane.cancel()
        if not caller_stays:
            first.cancel()
        async with asyncio.timeout(5):
            if caller_stays:
                assert await first is True
            assert await coalescer.get("b") is True
        assert coalescer.waiting() == 0

    asyncio.run(scenario())


def test_each_event_loop_is_answered_on_its_own() -> None:
    """Two loops in two threads (a test client may run one per request) checking at once:
    a future is answered by a lane of its own loop, never from another thread."""
    load = Loader({"a"})
    coalescer = Coalescer(membership(load), lanes=1, limit=32)
    answers: dict[str, bool] = {}
    both_waiting = threading.Barrier(2)

    async def check(name: str) -> None:
        async with asyncio.timeout(5):
            await asyncio.to_thread(both_waiting.wait)
            answers[name] = await coalescer.get("a")

    threads = [threading.Thread(target=asyncio.run, args=(check(n),)) for n in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == {"A": True, "B": True}


def test_a_key_whose_callers_all_gave_up_is_not_loaded() -> None:
    """Loading may be recording (a grant): a key nobody waits for any more is left out
    of its batch, and a batch of only such keys is not loaded at all."""

    async def scenario() -> None:
        loads: list[list[str]] = []

        async def load(keys: list[str]) -> dict[str, bool]:
            loads.append(keys)
            return dict.fromkeys(keys, True)

        coalescer: Coalescer[str, bool] = Coalescer(load, lanes=1, limit=32)
        gone = asyncio.ensure_future(coalescer.get("gone"))
        kept = asyncio.ensure_future(coalescer.get("kept"))
        await asyncio.sleep(0)  # both queued, the lane not yet run
        gone.cancel()
        async with asyncio.timeout(5):
            assert await kept is True
        assert loads == [["kept"]]
        alone = asyncio.ensure_future(coalescer.get("alone"))
        await asyncio.sleep(0)
        alone.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert loads == [["kept"]] and coalescer.waiting() == 0

    asyncio.run(scenario())
