"""The simulation backend: works anywhere, protects nothing from the host.

The evidence is a statement (measurement, report data, debug flag, platform key) signed
by an Ed25519 *platform key* that the worker registered with the sms. It proves only
that a registered platform vouched for the statement; a host can run anything under
that key. A policy refuses it unless it tolerates ``simulation``, and the best status
it ever earns is ``warning``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from confide.attestation.evidence import Appraisal, Evidence
from confide.attestation.measurement import Measurement
from confide.attestation.policy import SIMULATED
from confide.crypto.encoding import lp
from confide.crypto.signing import SigningKey, verify_signature
from confide.errors import AttestationError
from confide.jsonsafe import loads_bounded

FORMAT = "confide-sim-evidence-v1"
REGISTRATION_LABEL = b"confide-sim-platform-v1"
MAX_EVIDENCE_BYTES = 16 * 1024
_FIELDS = {"debug", "format", "measurement", "platform", "report_data"}
_LOWER_HEX = re.compile(r"[0-9a-f]+")


class PlatformRegistry(Protocol):
    def is_registered(self, platform_key: bytes) -> bool: ...


class MemoryPlatformRegistry:
    def __init__(self, keys: set[bytes] | None = None) -> None:
        self._keys = set(keys or ())

    def register(self, platform_key: bytes) -> None:
        self._keys.add(platform_key)

    def is_registered(self, platform_key: bytes) -> bool:
        return platform_key in self._keys


def registration_message(wallet_address: str, audience: str) -> bytes:
    """What a platform key signs to be registered by ``wallet_address`` at the service
    ``audience`` names: proof that the wallet holds the key, bound to that wallet and that
    service, so nobody can register a platform key they only saw (and then speak for the
    worker that owns it, or hold its key hostage by registering it first)."""
    return lp(audience.encode()) + lp(wallet_address.lower().encode())


def registration_proof(platform: SigningKey, wallet_address: str, audience: str) -> bytes:
    """The platform key's signature for its registration (see :func:`registration_message`)."""
    return platform.sign(REGISTRATION_LABEL, registration_message(wallet_address, audience))


def check_registration_proof(
    platform_key: bytes, proof: bytes, wallet_address: str, audience: str
) -> None:
    """Raise AttestationError unless ``proof`` is ``platform_key``'s registration proof
    for this wallet at this service."""
    message = registration_message(wallet_address, audience)
    if not verify_signature(platform_key, REGISTRATION_LABEL, message, proof):
        raise AttestationError(
            "the proof is not the platform key's signature of this registration (its "
            "wallet and this sms's audience): register a platform key you hold"
        )


def _canonical(statement: dict[str, Any]) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


class SimAttester:
    """Makes sim evidence for one measured app on one platform."""

    tee = "sim"

    def __init__(self, platform: SigningKey, measurement: Measurement, debug: bool = False) -> None:
        if measurement.tee != "sim":
            raise AttestationError(f"the sim attester cannot claim {measurement.short()}")
        self._platform = platform
        self._measurement = measurement
        self._debug = debug

    def evidence(self, report_data: bytes) -> Evidence:
        statement = {
            "debug": self._debug,
            "format": FORMAT,
            "measurement": str(self._measurement),
            "platform": self._platform.public_bytes().hex(),
            "report_data": report_data.hex(),
        }
        signature = self._platform.sign(FORMAT.encode(), _canonical(statement))
        document = {"statement": statement, "signature": signature.hex()}
        return Evidence("sim", _canonical(document))


class SimVerifier:
    """Checks sim evidence against the registry of platform keys."""

    tee = "sim"

    def __init__(self, registry: PlatformRegistry) -> None:
        self._registry = registry

    def appraise(self, evidence: Evidence, now: int) -> Appraisal:
        del now  # a sim statement carries no collateral to expire
        statement, signature = _parse(evidence.data)
        platform = bytes.fromhex(statement["platform"])
        if not self._registry.is_registered(platform):
            raise AttestationError(f"sim platform key {platform.hex()[:16]}… is not registered")
        if not verify_signature(platform, FORMAT.encode(), _canonical(statement), signature):
            raise AttestationError("sim evidence signature does not verify")
        measurement = Measurement.parse(statement["measurement"])
        if measurement.tee != "sim":
            raise AttestationError("sim evidence claims a non-sim measurement")
        return Appraisal(
            tee="sim",
            measurement=measurement,
            report_data=bytes.fromhex(statement["report_data"]),
            debug=statement["debug"],
            tcb_status=SIMULATED,
            platform=platform.hex(),
        )


def _parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) > MAX_EVIDENCE_BYTES:
        raise AttestationError("sim evidence is too large")
    try:
        document = loads_bounded(data, 3, object_pairs_hook=_no_duplicates)
        statement = document["statement"]
        signature = bytes.fromhex(document["signature"])
        valid = (
            isinstance(document, dict)
            and set(document) == {"statement", "signature"}
            and isinstance(statement, dict)
            and set(statement) == _FIELDS
            and statement["format"] == FORMAT
            and isinstance(statement["debug"], bool)
            and isinstance(statement["measurement"], str)
            and len(bytes.fromhex(statement["platform"])) == 32
            and len(bytes.fromhex(statement["report_data"])) == 64
            and len(signature) == 64
        )
        # One byte string per statement: no BOM, no spacing, no escapes, lower-case hex.
        valid = (
            valid
            and data == _canonical(document)
            and all(
                _LOWER_HEX.fullmatch(value)
                for value in (
                    document["signature"],
                    statement["platform"],
                    statement["report_data"],
                )
            )
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        valid = False
    if not valid:
        raise AttestationError("sim evidence is malformed")
    return statement, signature


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)
