"""The parallel engine: every piece runs once, and failures stop everything cleanly."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from confide.errors import VolumeError
from confide.volume import engine
from confide.volume.engine import Piece, plan_batches
from tests.conftest import MIB


def test_plan_covers_every_segment_once() -> None:
    sizes = [0, 5, MIB, 9 * MIB + 1, 3, 20 * MIB]
    seen = [
        (piece.file, index)
        for batch in plan_batches(sizes)
        for piece in batch
        for index in range(piece.first, piece.stop)
    ]
    expected = [(i, s) for i, size in enumerate(sizes) for s in range(max(1, -(-size // MIB)))]
    assert sorted(seen) == expected


def test_small_files_are_batched_by_count_and_bytes() -> None:
    batches = plan_batches([4096] * 1000)
    assert [len(b) for b in batches] == [256, 256, 256, 232]


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_every_piece_reported_once(monkeypatch: pytest.MonkeyPatch, processes: bool) -> None:
    monkeypatch.setattr(engine, "_fork_is_safe", lambda: processes)
    batches = plan_batches([100] * 600)
    results: list[tuple[int, int]] = []
    engine.run_batches(
        batches, lambda p: p.file * 2, 2, lambda p, r: results.append((p.file, int(r)))
    )
    assert sorted(results) == [(i, i * 2) for i in range(600)]


def _die_on_file_500(piece: Piece) -> int:
    if piece.file == 500:
        os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_a_worker_process_that_dies_is_an_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "_fork_is_safe", lambda: True)
    batches = plan_batches([100] * 600)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.run_batches(batches, _die_on_file_500, 2, lambda p, r: None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "run_batches hung after a worker died"
    assert len(outcome) == 1
    assert isinstance(outcome[0], VolumeError)
    assert "worker process died" in str(outcome[0])
    assert engine._forked == {}


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_first_error_is_raised(monkeypatch: pytest.MonkeyPatch, processes: bool) -> None:
    monkeypatch.setattr(engine, "_fork_is_safe", lambda: processes)

    def work(piece: Piece) -> int:
        if piece.file == 300:
            raise VolumeError("file 300 is bad")
        return 0

    with pytest.raises(VolumeError, match="file 300 is bad"):
        engine.run_batches(plan_batches([10] * 600), work, 2, lambda p, r: None)
