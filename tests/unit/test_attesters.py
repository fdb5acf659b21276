"""Hardware attesters through the file interfaces, with a test directory playing the
kernel (configfs-tsm) or Gramine: FIFOs make the data really flow through the files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from confide.attestation.hardware import ConfigfsTsmAttester, GramineAttester
from confide.errors import AttestationError

REPORT_DATA = bytes(range(64))


def _fake_quote(report_data: bytes) -> bytes:
    return b"QUOTE" + report_data[::-1]


def test_gramine_attester_writes_report_data_and_reads_the_quote(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("dcap\n")
    os.mkfifo(tmp_path / "user_report_data")
    os.mkfifo(tmp_path / "quote")
    seen: list[bytes] = []

    def gramine() -> None:
        data = (tmp_path / "user_report_data").read_bytes()
        seen.append(data)
        (tmp_path / "quote").write_bytes(_fake_quote(data))

    thread = threading.Thread(target=gramine)
    thread.start()
    evidence = GramineAttester(tmp_path).evidence(REPORT_DATA)
    thread.join(10)
    assert seen == [REPORT_DATA]
    assert evidence.tee == "sgx"
    assert evidence.data == _fake_quote(REPORT_DATA)


def test_gramine_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="not available"):
        GramineAttester(tmp_path / "missing").evidence(REPORT_DATA)
    with pytest.raises(AttestationError, match="64 bytes"):
        GramineAttester(tmp_path).evidence(b"short")


class FakeTsm:
    """Plays configfs-tsm: a new report entry gets inblob, outblob and generation."""

    def __init__(self, root: Path, generation: str = "1") -> None:
        self.root = root
        self.generation = generation
        self.inblobs: list[bytes] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        handled: set[str] = set()
        while not self._stop.is_set():
            for entry in os.scandir(self.root):
                if entry.name in handled or not entry.is_dir():
                    continue
                handled.add(entry.name)
                entry_dir = Path(entry.path)
                (entry_dir / "generation").write_text(self.generation + "\n")
                (entry_dir / "provider").write_text("tdx_guest\n")
                os.mkfifo(entry_dir / "outblob")
                os.mkfifo(entry_dir / "inblob")
                data = (entry_dir / "inblob").read_bytes()
                self.inblobs.append(data)
                (entry_dir / "outblob").write_bytes(_fake_quote(data))
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


@pytest.mark.parametrize("generation", ["1", "2"])
def test_configfs_tsm_attester(tmp_path: Path, generation: str) -> None:
    kernel = FakeTsm(tmp_path, generation)
    try:
        attester = ConfigfsTsmAttester(tmp_path)
        if generation == "1":
            evidence = attester.evidence(REPORT_DATA)
            assert evidence.tee == "tdx"
            assert evidence.data == _fake_quote(REPORT_DATA)
        else:
            with pytest.raises(AttestationError, match="raced us"):
                attester.evidence(REPORT_DATA)
    finally:
        kernel.stop()
    assert kernel.inblobs == [REPORT_DATA]


def test_configfs_tsm_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="not available"):
        ConfigfsTsmAttester(tmp_path / "missing").evidence(REPORT_DATA)
