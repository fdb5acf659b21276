"""Which TEE a worker runs tasks in, and the simulation platform's key.

Outside ``confide up`` nothing defaults to ``sim`` (DESIGN.md "Attestation backends"): a
worker started without ``--tee`` uses the hardware it finds (SGX through Gramine's
attestation device or the SGX driver, TDX through configfs-tsm), and with none it stops,
saying to pass ``--tee sim`` for development.

A sim worker signs its enclaves' evidence with a platform key (Ed25519) that it keeps in
its own directory (mode 0600) and registers with the sms under its wallet at start. The
key protects nothing from the worker's host, by design: simulation is refused unless the
sms, the order and every released secret tolerate it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from confide.crypto.keys import write_secret_file
from confide.crypto.signing import SigningKey
from confide.errors import ConfideError, KeyFileError

TEES = ("sim", "sgx", "tdx")
PLATFORM_KEY_FILE = "sim-platform-key"
# Where each TEE shows itself to a process (roots configurable for tests).
SGX_DEVICES = (Path("/dev/attestation"), Path("/dev/sgx_enclave"), Path("/dev/sgx/enclave"))
TDX_DEVICES = (Path("/sys/kernel/config/tsm/report"), Path("/dev/tdx_guest"))


class TeeError(ConfideError):
    """No TEE to run tasks in, or one that was asked for and is not here."""


def detect_tee(
    sgx: tuple[Path, ...] = SGX_DEVICES, tdx: tuple[Path, ...] = TDX_DEVICES
) -> str | None:
    """ "tdx" or "sgx" when this machine offers it, else None (never "sim")."""
    if any(path.exists() for path in tdx):
        return "tdx"
    if any(path.exists() for path in sgx):
        return "sgx"
    return None


def choose_tee(asked: str | None, detected: str | None) -> str:
    """The TEE a worker uses: the one asked for, else the hardware found."""
    if asked is not None:
        if asked not in TEES:
            raise TeeError(f"unknown TEE {asked!r}: one of {', '.join(TEES)}")
        return asked
    if detected is None:
        raise TeeError(
            "no TEE hardware found on this machine (no SGX device, no TDX configfs-tsm): "
            "pass --tee sim for development (simulation protects nothing from this host)"
        )
    return detected


def platform_key(directory: Path) -> SigningKey:
    """The sim platform key kept in ``directory`` (made at first use, mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / PLATFORM_KEY_FILE
    if not path.exists():
        fresh = SigningKey.generate()
        # another worker of this directory may make it first: then use theirs
        with contextlib.suppress(KeyFileError):
            write_secret_file(
                path, (fresh.seed().hex() + "\n").encode(), overwrite=False, exists="exists"
            )
    try:
        text = path.read_text().strip()
        return SigningKey.from_seed(bytes.fromhex(text))
    except (OSError, ValueError):
        raise TeeError(f"the sim platform key {path} is unreadable or malformed") from None
