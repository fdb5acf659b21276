"""The TD image's measurement (docs/hardware.md, "TDX"): what a TDX quote must show for
confide to trust the task running in the TD.

MRTD measures the TD firmware (TDVF) only; RTMR1 the kernel (and, with direct boot, the
initrd); RTMR2 the kernel command line, which carries the dm-verity root hash of the
read-only root filesystem (runtime, interpreter, libraries); RTMR3 is extended once, by
the image's init before it attests, with the SHA-384 of the bundle's canonical manifest.
A :class:`TdMeasurement` pins the four together:

    tdx:<MRTD>.<RTMR1>.<RTMR2>.<RTMR3>      (4 x 96 lower-case hex, dot-separated)

Today's :class:`confide.attestation.measurement.Measurement` knows ``tdx:<MRTD>`` only
(and a policy's ``tdx`` block pins RTMRs beside it); :meth:`TdMeasurement.policy` maps
the composite onto exactly that, so the sms can enforce it with no new verifier code.
A composite value is refused by today's ``Measurement.parse`` (it is not 96 hex), so it
can never be taken for a bare MRTD.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from confide.attestation.evidence import Appraisal
from confide.attestation.measurement import Measurement
from confide.attestation.policy import Policy, TdxPins
from confide.bundle.measure import RUNTIME_IDENTITY, bundle_entries, read_manifest
from confide.crypto.encoding import lp
from confide.errors import AttestationError

MEASUREMENTS_DIR = Path("/sys/class/misc/tdx_guest/measurements")  # Linux 6.16+ (tsm-mr)
RTMR3_FILE = "rtmr3:sha384"
RTMR_BYTES = 48
BUNDLE_LABEL = b"confide-td-bundle-v1"
_HEX96 = re.compile(r"[0-9a-f]{96}")
_NAMES = ("MRTD", "RTMR1", "RTMR2", "RTMR3")


@dataclass(frozen=True)
class TdMeasurement:
    mrtd: str
    rtmr1: str
    rtmr2: str
    rtmr3: str

    def __post_init__(self) -> None:
        for name, value in zip(_NAMES, self.values(), strict=True):
            if not _HEX96.fullmatch(value):
                raise AttestationError(f"{name} is 96 lower-case hex characters (SHA-384)")

    def values(self) -> tuple[str, str, str, str]:
        return (self.mrtd, self.rtmr1, self.rtmr2, self.rtmr3)

    @classmethod
    def parse(cls, text: str) -> TdMeasurement:
        tee, sep, rest = text.strip().partition(":")
        parts = rest.lower().split(".")
        if tee.lower() != "tdx" or not sep or len(parts) != 4:
            raise AttestationError(
                f"TD measurement {text[:40]!r}…: write it as tdx:<MRTD>.<RTMR1>.<RTMR2>.<RTMR3> "
                f"(4 x 96 hex)"
            )
        return cls(*parts)

    def __str__(self) -> str:
        return "tdx:" + ".".join(self.values())

    def reasons(self, appraisal: Appraisal) -> list[str]:
        """Why ``appraisal`` is not this TD: a register that differs (named), or debug."""
        if appraisal.tee != "tdx":
            return [f"a {appraisal.tee} appraisal is not a TD"]
        actual = (appraisal.measurement.value, *appraisal.rtmrs[1:4])
        found = [
            f"{name} differs"
            for name, want, got in zip(_NAMES, self.values(), actual, strict=False)
            if want != got
        ]
        if len(actual) < 4:
            found.append("the quote carries no RTMRs")
        if appraisal.debug:
            found.append("the TD runs with debug attributes: refused")
        return found

    def policy(self) -> Policy:
        """The policy today's verifier enforces for this TD: MRTD as the measurement,
        RTMR1-3 pinned (RTMR0, the VM's firmware configuration, left to the session's
        ``tdx`` block where the VM shape is fixed); debug never tolerated."""
        return Policy(
            measurements=frozenset({Measurement("tdx", self.mrtd)}),
            tee_types=frozenset({"tdx"}),
            tdx_pins=(TdxPins(rtmrs=((1, self.rtmr1), (2, self.rtmr2), (3, self.rtmr3))),),
        )


def bundle_digest(bundle: Path) -> bytes:
    """SHA-384 of the bundle's canonical manifest (the document its ``sim:`` measurement
    hashes: every file's path, mode and SHA-256, entrypoint, runtime, heap, stack,
    threads, the runtime identity), labelled for the TD: what RTMR3 is extended with."""
    app = read_manifest(bundle)
    document = {
        "runtime_identity": RUNTIME_IDENTITY,
        "entrypoint": app.entrypoint,
        "runtime": app.runtime,
        "heap": app.heap,
        "stack": app.stack,
        "threads": app.threads,
        "entries": bundle_entries(bundle),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha384(lp(BUNDLE_LABEL) + canonical).digest()


def extended(register: bytes, digest: bytes) -> bytes:
    """An RTMR after one extension: SHA-384(register || digest)."""
    if len(register) != RTMR_BYTES or len(digest) != RTMR_BYTES:
        raise AttestationError(f"an RTMR and its extension are {RTMR_BYTES} bytes each")
    return hashlib.sha384(register + digest).digest()


def expected_rtmr3(bundle: Path) -> str:
    """RTMR3 of a fresh TD after the image's init extended it with the bundle (hex)."""
    return extended(bytes(RTMR_BYTES), bundle_digest(bundle)).hex()


def extend_rtmr3(digest: bytes, measurements_dir: Path = MEASUREMENTS_DIR) -> bytes:
    """Extend RTMR3 with ``digest`` through the kernel's measurement-register files
    (``rtmr3:sha384``: read the value, write 48 bytes to extend). Refused unless RTMR3
    is still zero (one task per TD: nothing else was extended first); the value read
    back must be the extension. Returns the new RTMR3."""
    register = measurements_dir / RTMR3_FILE
    try:
        before = register.read_bytes()
        if before != bytes(RTMR_BYTES):
            raise AttestationError(
                "RTMR3 was already extended: a TD runs one task, measured once before it attests"
            )
        register.write_bytes(digest)
        after = register.read_bytes()
    except OSError as exc:
        raise AttestationError(
            f"cannot extend RTMR3 through {register} ({exc.strerror}): a TD needs Linux "
            f"6.16+ with the tdx_guest measurement registers"
        ) from None
    if after != extended(before, digest):
        raise AttestationError("RTMR3 read back is not the extension just made")
    return after
