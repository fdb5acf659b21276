"""A TDX quote through configfs-tsm, with a test directory playing the kernel: a thread
gives each new report entry its attribute files (FIFOs), writes ``outblob`` when
``inblob`` is written, says the provider and the generation, and empties the entry as
configfs would let it go, so the caller's rmdir really removes it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from confide.errors import AttestationError
from confide.hardware.tdx_quote import generate

REPORT_DATA = bytes(range(64))
ATTRIBUTES = ("outblob", "provider", "generation", "inblob")  # inblob last: callers wait on it


def _quote(report_data: bytes) -> bytes:
    return b"TDX-QUOTE-V4" + report_data[::-1]


class Kernel:
    def __init__(self, root: Path, provider: str = "tdx_guest", generation: int = 1) -> None:
        self.root = root
        self.provider = provider
        self.generation = generation
        self.inblobs: list[bytes] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        handled: set[str] = set()
        while not self._stop.is_set():
            for entry in os.scandir(self.root):
                if entry.name not in handled and entry.is_dir():
                    handled.add(entry.name)
                    self._report(Path(entry.path))
            time.sleep(0.001)

    def _report(self, entry: Path) -> None:
        for name in ATTRIBUTES:
            os.mkfifo(entry / name)
        data = (entry / "inblob").read_bytes()
        self.inblobs.append(data)
        (entry / "outblob").write_bytes(_quote(data))
        (entry / "provider").write_text(self.provider + "\n")
        fd = os.open(entry / "generation", os.O_WRONLY)  # the caller has it open now
        for name in ATTRIBUTES:
            os.unlink(entry / name)
        os.write(fd, f"{self.generation}\n".encode())
        os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


def test_report_data_goes_in_the_quote_comes_out_and_the_entry_is_removed(
    tmp_path: Path,
) -> None:
    kernel = Kernel(tmp_path)
    try:
        report = generate(REPORT_DATA, tsm_dir=tmp_path)
    finally:
        kernel.stop()
    assert kernel.inblobs == [REPORT_DATA]
    assert report.quote == _quote(REPORT_DATA)
    assert (report.provider, report.generation) == ("tdx_guest", 1)
    assert list(tmp_path.iterdir()) == []  # rmdir'd


def test_a_report_from_another_provider_is_refused(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path, provider="sev_guest")
    try:
        with pytest.raises(AttestationError, match="made by 'sev_guest', not 'tdx_guest'"):
            generate(REPORT_DATA, tsm_dir=tmp_path)
    finally:
        kernel.stop()


def test_an_entry_another_writer_raced_is_refused(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path, generation=2)
    try:
        with pytest.raises(AttestationError, match="written 2 times"):
            generate(REPORT_DATA, tsm_dir=tmp_path)
    finally:
        kernel.stop()


def test_without_configfs_tsm_the_error_says_what_a_td_needs(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="tdx_guest driver and configfs"):
        generate(REPORT_DATA, tsm_dir=tmp_path / "missing")
    with pytest.raises(AttestationError, match="64 bytes, not 65"):
        generate(bytes(65), tsm_dir=tmp_path)
