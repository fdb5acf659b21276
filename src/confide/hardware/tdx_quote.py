"""A TDX quote through configfs-tsm (Linux 6.7+, ``tdx_guest`` provider).

The kernel's file interface, as Documentation/ABI/testing/configfs-tsm-report describes
it: make an entry under ``/sys/kernel/config/tsm/report`` (mkdir), write the 64 report
data bytes to its ``inblob``, read the quote from ``outblob``, read ``provider`` (which
driver made it: ``tdx_guest`` for a TD) and ``generation`` (how many writes the entry
took: exactly our one, or another process raced us on the same entry), then remove the
entry (rmdir). :class:`confide.attestation.hardware.ConfigfsTsmAttester`, the attester
the enclave runtime uses, is this function.

Any root process of a TD can ask for a quote this way: the quote is evidence for the TD
as booted (MRTD, RTMR0-2) and for what was extended into RTMR3 before it was asked for,
which is why the TD image of docs/hardware.md extends RTMR3 with the bundle's hash first
and runs one task per TD.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from confide.crypto.binding import REPORT_DATA_BYTES
from confide.errors import AttestationError

TSM_REPORT_DIR = Path("/sys/kernel/config/tsm/report")
TDX_PROVIDER = "tdx_guest"
_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class TsmReport:
    quote: bytes
    provider: str
    generation: int


def _wait_for(path: Path, timeout: float = _WAIT_SECONDS) -> None:
    """configfs makes an entry's attributes with the entry; a slower provider (or a
    test playing the kernel) gets a moment."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AttestationError(f"configfs-tsm entry {path.parent.name} has no {path.name}")
        time.sleep(0.001)


def generate(
    report_data: bytes,
    tsm_dir: Path = TSM_REPORT_DIR,
    provider: str = TDX_PROVIDER,
) -> TsmReport:
    """A quote binding ``report_data`` (64 bytes) from the configfs-tsm ``provider``."""
    if len(report_data) != REPORT_DATA_BYTES:
        raise AttestationError(f"report data is {REPORT_DATA_BYTES} bytes, not {len(report_data)}")
    entry = tsm_dir / f"confide-{os.getpid()}-{os.urandom(8).hex()}"
    try:
        entry.mkdir()
    except OSError as exc:
        raise AttestationError(
            f"configfs-tsm is not available at {tsm_dir} ({exc.strerror}): a TD needs Linux "
            f"6.7+ with the tdx_guest driver and configfs mounted at /sys/kernel/config"
        ) from None
    try:
        _wait_for(entry / "inblob")
        (entry / "inblob").write_bytes(report_data)
        quote = (entry / "outblob").read_bytes()
        made_by = (entry / "provider").read_text().strip()
        generation_text = (entry / "generation").read_text().strip()
    except OSError as exc:
        raise AttestationError(f"configfs-tsm report failed: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            entry.rmdir()
    if made_by != provider:
        raise AttestationError(
            f"configfs-tsm report made by {made_by or 'no provider'!r}, not {provider!r}: "
            f"this is not a TD quote"
        )
    if generation_text != "1":
        raise AttestationError(
            f"configfs-tsm entry was written {generation_text} times, not once: another "
            f"writer raced us on it"
        )
    if not quote:
        raise AttestationError("configfs-tsm returned an empty quote")
    return TsmReport(quote, made_by, 1)
