"""The records the hub keeps: owner-signed, verified on the way in, highest sequence wins.

The hub is not trusted with them (docs/hub.md, "Trust"): whoever relies on a record (the
sms, the CLI) verifies its owner's signature again. The hub verifies too, so that what it
serves is at least well formed, signed by its owner and made for this deployment, and it
keeps only a sequence higher than the one it has, as the sms does: an owner's update
cannot be rolled back through it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from confide.db.direct import DirectStatement
from confide.errors import ConfideError
from confide.hub.tables import hub_records
from confide.records import OwnerRecord, SignedRecord

_CACHE_SIZE = 4096
# On every claim (the pool's record): compiled once, run on the driver; the record's
# JSON is read only when this process has not parsed that sequence yet.
_KEPT = DirectStatement(
    select(hub_records.c.kind, hub_records.c.sequence).where(
        hub_records.c.address == bindparam("address")
    )
)
_SIGNED = DirectStatement(
    select(hub_records.c.signed).where(
        hub_records.c.address == bindparam("address"),
        hub_records.c.sequence == bindparam("sequence"),
    )
)


class RecordConflictError(ConfideError):
    """A record whose sequence is not above the kept one (409, naming both)."""


class UnknownRecordError(ConfideError):
    """No record is kept at that address (404)."""


class RecordStore:
    """The kept records of one deployment."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        # Parsed records by (address, sequence): a kept row never changes under one key.
        self._parsed: dict[tuple[str, int], OwnerRecord] = {}
        self._lock = threading.Lock()

    def put(self, connection: Connection, signed: SignedRecord, now: int) -> OwnerRecord:
        """Keep ``signed`` (verified here) if its sequence is above the kept one."""
        record = signed.verify(self.deployment)
        query = select(hub_records.c.sequence).where(hub_records.c.address == record.address)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        kept = connection.execute(query).scalar_one_or_none()
        document = json.dumps(signed.to_json(), sort_keys=True, separators=(",", ":"))
        if kept is None:
            connection.execute(
                insert(hub_records).values(
                    address=record.address,
                    kind=record.kind,
                    owner=record.owner,
                    name=record.name,
                    sequence=record.sequence,
                    signed=document,
                    updated_at=now,
                )
            )
        elif kept >= record.sequence:
            raise RecordConflictError(
                f"{record.kind} record {record.address}: sequence {record.sequence} is not "
                f"above the kept sequence {kept}"
            )
        else:
            connection.execute(
                update(hub_records)
                .where(hub_records.c.address == record.address)
                .values(sequence=record.sequence, signed=document, updated_at=now)
            )
        return record

    def signed(self, connection: Connection, address: str) -> SignedRecord | None:
        row = connection.execute(
            select(hub_records.c.signed).where(hub_records.c.address == address)
        ).first()
        return None if row is None else SignedRecord.from_json(json.loads(row.signed))

    def kept(self, connection: Connection, address: str, kind: str) -> OwnerRecord | None:
        """The kept record of ``kind`` at ``address`` (None: none, or another kind)."""
        row = _KEPT.first(connection, {"address": address})
        if row is None or row.kind != kind:
            return None
        key = (address, int(row.sequence))
        with self._lock:
            found = self._parsed.get(key)
        if found is None:
            text = _SIGNED.first(connection, {"address": address, "sequence": key[1]})
            if text is None:  # replaced since the first read: read the record again
                return self.kept(connection, address, kind)
            found = SignedRecord.from_json(json.loads(text.signed)).record
            with self._lock:
                if len(self._parsed) >= _CACHE_SIZE:
                    self._parsed.clear()
                self._parsed[key] = found
        return found

    def listed(
        self, connection: Connection, kind: str, owner: str | None, limit: int = 1000
    ) -> list[SignedRecord]:
        query = select(hub_records.c.signed).where(hub_records.c.kind == kind)
        if owner is not None:
            query = query.where(hub_records.c.owner == owner)
        query = query.order_by(hub_records.c.owner, hub_records.c.name).limit(limit)
        return [SignedRecord.from_json(json.loads(r.signed)) for r in connection.execute(query)]


def record_view(signed: SignedRecord) -> dict[str, Any]:
    """What ``GET /v1/apps/{address}`` (and datasets, workerpools) answers."""
    record = signed.record
    return {
        "address": record.address,
        "kind": record.kind,
        "owner": record.owner,
        "name": record.name,
        "sequence": record.sequence,
        **dict(record.fields),
        "signed": signed.to_json(),
    }
