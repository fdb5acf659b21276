"""Owner-signed records: what the hub registers and the sms relies on.

The hub is untrusted (docs/hub.md, "Trust"): it schedules, it never decides who gets a
secret. So every record the sms relies on is signed by the wallet that owns it, and
whoever relies on one checks that signature itself:

- an **app** record (name, bundle blob digest, typed measurement, whether its logs may
  reach the requester) signed by the app's owner at deploy;
- a **dataset** record (name, blob digest, checksum: the encrypted volume's tag) signed by
  the dataset's owner;
- a **workerpool** record (name, its *whole* member set, the requesters it admits or
  none for any) signed by the pool's owner. A membership change is a new record.

Each record names its kind, the hub's deployment id and a sequence number, and is signed
with EIP-191 over ``confide-record-v1\\n`` + its canonical JSON. Whoever keeps records
keeps the highest sequence seen per address, so a hub can neither replay an old record (a
removed member, an older measurement) nor one of another deployment. A record's address
is derived from (kind, deployment, owner, name) and so stays the same across sequences:
``0x`` + the first 20 bytes of its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from confide.attestation.measurement import Measurement
from confide.crypto.wallet import Wallet, normalise_address, recover_signer
from confide.errors import AttestationError, AuthError, ConfideError
from confide.names import NAME

RECORD_LABEL = "confide-record-v1\n"
_ADDRESS_LABEL = b"confide-address-v1\n"
KINDS = ("app", "dataset", "workerpool")
MAX_MEMBERS = 1000  # of a workerpool, its owner included
MAX_REQUESTERS = 1000
MAX_RECORD_BYTES = 256 * 1024  # a record's JSON, signature included
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_COMMON = {"kind", "deployment", "owner", "name", "sequence"}
_FIELDS = {
    "app": _COMMON | {"bundle", "measurement", "logs"},
    "dataset": _COMMON | {"blob", "checksum"},
    "workerpool": _COMMON | {"members", "requesters"},
}


class RecordError(ConfideError):
    """A record that is malformed or not signed by its owner; the message names it."""


def record_address(kind: str, deployment: str, owner: str, name: str) -> str:
    """``0x`` + 40 hex: stable for one owner's named app, dataset or workerpool."""
    text = "\n".join((kind, deployment, normalise_address(owner), name)).encode()
    return "0x" + hashlib.sha256(_ADDRESS_LABEL + text).hexdigest()[:40]


def next_sequence(known: int = 0, clock: float | None = None) -> int:
    """A sequence above ``known`` (the highest one seen): milliseconds since the epoch, so
    that two CLIs updating one record need not coordinate, and never below known + 1."""
    now_ms = int((time.time() if clock is None else clock) * 1000)
    return max(now_ms, known + 1)


@dataclass(frozen=True)
class OwnerRecord:
    """One version of an app, dataset or workerpool record (unsigned)."""

    kind: str  # app | dataset | workerpool
    deployment: str  # the hub's deployment id
    owner: str  # lower-case wallet address
    name: str
    sequence: int  # higher replaces lower
    fields: tuple[tuple[str, Any], ...]  # the kind's own fields, sorted by name

    @property
    def address(self) -> str:
        return record_address(self.kind, self.deployment, self.owner, self.name)

    def field(self, key: str) -> Any:
        return dict(self.fields)[key]

    # The kinds' fields, typed.
    @property
    def measurement(self) -> Measurement:
        """An app's typed measurement: the code its owner signed for."""
        return Measurement.parse(self.field("measurement"))

    @property
    def members(self) -> frozenset[str]:
        """A workerpool's members (its owner among them)."""
        return frozenset(self.field("members"))

    @property
    def requesters(self) -> frozenset[str] | None:
        """Who may submit to a workerpool; None: anyone."""
        value = self.field("requesters")
        return None if value is None else frozenset(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "deployment": self.deployment,
            "owner": self.owner,
            "name": self.name,
            "sequence": self.sequence,
            **dict(self.fields),
        }

    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def signing_message(self) -> str:
        return RECORD_LABEL + self.canonical()

    def sign(self, wallet: Wallet) -> SignedRecord:
        if wallet.address != self.owner:
            raise RecordError(f"a {self.kind} record is signed by its owner's wallet")
        return SignedRecord(self, wallet.sign_text(self.signing_message()))

    @classmethod
    def app(
        cls,
        deployment: str,
        owner: str,
        name: str,
        *,
        bundle: str,
        measurement: Measurement,
        logs: bool = False,
        sequence: int | None = None,
    ) -> OwnerRecord:
        return cls.from_json(
            {
                "kind": "app",
                "deployment": deployment,
                "owner": owner,
                "name": name,
                "sequence": next_sequence() if sequence is None else sequence,
                "bundle": bundle,
                "measurement": str(measurement),
                "logs": logs,
            }
        )

    @classmethod
    def dataset(
        cls,
        deployment: str,
        owner: str,
        name: str,
        *,
        blob: str,
        checksum: str,
        sequence: int | None = None,
    ) -> OwnerRecord:
        return cls.from_json(
            {
                "kind": "dataset",
                "deployment": deployment,
                "owner": owner,
                "name": name,
                "sequence": next_sequence() if sequence is None else sequence,
                "blob": blob,
                "checksum": checksum,
            }
        )

    @classmethod
    def workerpool(
        cls,
        deployment: str,
        owner: str,
        name: str,
        *,
        members: frozenset[str] | set[str] | list[str] = frozenset(),
        requesters: frozenset[str] | set[str] | list[str] | None = None,
        sequence: int | None = None,
    ) -> OwnerRecord:
        """The owner is always a member (added here when not listed)."""
        return cls.from_json(
            {
                "kind": "workerpool",
                "deployment": deployment,
                "owner": owner,
                "name": name,
                "sequence": next_sequence() if sequence is None else sequence,
                "members": sorted({normalise_address(m) for m in members} | {owner.lower()}),
                "requesters": None
                if requesters is None
                else sorted({normalise_address(r) for r in requesters}),
            }
        )

    @classmethod
    def from_json(cls, data: Any) -> OwnerRecord:
        """A record from its JSON form; RecordError naming what is wrong."""
        if not isinstance(data, dict):
            raise RecordError("a record is a JSON object")
        kind = data.get("kind")
        if kind not in KINDS:
            raise RecordError(f"record kind {kind!r} is not one of {', '.join(KINDS)}")
        allowed = _FIELDS[kind]
        unknown, missing = set(data) - allowed, allowed - set(data)
        if unknown or missing:
            parts = [f"unknown {sorted(unknown)}" if unknown else "", ""]
            parts[1] = f"missing {sorted(missing)}" if missing else ""
            raise RecordError(f"{kind} record fields: " + "; ".join(p for p in parts if p))
        try:
            owner = normalise_address(_text(data, "owner"))
        except AuthError as exc:
            raise RecordError(f"{kind} record: owner: {exc}") from None
        name = _text(data, "name")
        if not NAME.fullmatch(name):
            raise RecordError(f"{kind} record: name {name!r} is not 1-64 of A-Z a-z 0-9 _ -")
        deployment = _text(data, "deployment")
        if not _DEPLOYMENT.fullmatch(deployment):
            raise RecordError(f"{kind} record: deployment {deployment!r} is not a deployment id")
        sequence = data["sequence"]
        if not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 < sequence < 2**62:
            raise RecordError(f"{kind} record: sequence must be a positive integer")
        fields = _kind_fields(kind, data, owner)
        return cls(kind, deployment, owner, name, sequence, tuple(sorted(fields.items())))


@dataclass(frozen=True)
class SignedRecord:
    """A record and its owner's EIP-191 signature; :meth:`verify` before relying on it."""

    record: OwnerRecord
    signature: str

    @property
    def address(self) -> str:
        return self.record.address

    def verify(self, deployment: str | None = None) -> OwnerRecord:
        """The record, once its owner's signature checks (and, given ``deployment``, it
        names that deployment); RecordError naming the record otherwise."""
        record = self.record
        what = f"{record.kind} record {record.address} ({record.name!r})"
        try:
            signer = recover_signer(record.signing_message(), self.signature)
        except AuthError:
            raise RecordError(f"{what}: the signature is malformed") from None
        if signer != record.owner:
            raise RecordError(
                f"{what}: not signed by its owner {record.owner} (signed by {signer})"
            )
        if deployment is not None and record.deployment != deployment:
            raise RecordError(
                f"{what}: made for deployment {record.deployment!r}, not this one ({deployment!r})"
            )
        return record

    def to_json(self) -> dict[str, Any]:
        return {"record": self.record.to_json(), "signature": self.signature}

    @classmethod
    def from_json(cls, data: Any) -> SignedRecord:
        if not isinstance(data, dict) or set(data) != {"record", "signature"}:
            raise RecordError('a signed record is {"record": {…}, "signature": "0x…"}')
        signature = data["signature"]
        if not isinstance(signature, str) or len(signature) > 200:
            raise RecordError("a signed record's signature is a hex string")
        return cls(OwnerRecord.from_json(data["record"]), signature)


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise RecordError(f"{data.get('kind')} record: {key} must be a string")
    return value


def _hex64(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise RecordError(f"{data.get('kind')} record: {key} must be 64 lower-case hex characters")
    return value


def _addresses(value: Any, what: str, limit: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordError(f"workerpool record: {what} must be a list of wallet addresses")
    if len(value) > limit:
        raise RecordError(f"workerpool record: at most {limit} {what}")
    try:
        found = sorted({normalise_address(v) for v in value})
    except AuthError as exc:
        raise RecordError(f"workerpool record: {what}: {exc}") from None
    if found != value:
        raise RecordError(f"workerpool record: {what} must be lower-case, sorted, once each")
    return found


def _kind_fields(kind: str, data: dict[str, Any], owner: str) -> dict[str, Any]:
    if kind == "app":
        try:
            measurement = str(Measurement.parse(_text(data, "measurement")))
        except AttestationError as exc:
            raise RecordError(f"app record: measurement: {exc}") from None
        if not isinstance(data["logs"], bool):
            raise RecordError("app record: logs must be true or false")
        return {"bundle": _hex64(data, "bundle"), "measurement": measurement, "logs": data["logs"]}
    if kind == "dataset":
        return {"blob": _hex64(data, "blob"), "checksum": _hex64(data, "checksum")}
    members = _addresses(data["members"], "members", MAX_MEMBERS)
    if owner not in members:
        raise RecordError("workerpool record: its owner is always one of its members")
    requesters = data["requesters"]
    if requesters is not None:
        requesters = _addresses(requesters, "requesters", MAX_REQUESTERS)
    return {"members": members, "requesters": requesters}
