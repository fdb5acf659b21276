"""The owner-signed records the sms keeps: the highest sequence per address.

Owners push their records to the sms (``POST /v1/records``) as well as to the hub, and
the sms stores a higher sequence it fetches from the hub; what it relies on is the
highest sequence it has verified, so a hub can neither replay an older record (a removed
member, a former measurement) nor withhold a newer one that its owner pushed here.

What a wallet can make the sms keep is bounded: a record is at most
:data:`~confide.records.MAX_RECORD_BYTES`, one row per address (replaced, never
appended), and an address derives from its owner, so only the owner's own key adds
rows; each accepted record leaves one audit entry.

A record's signature is recovered once: verified records are remembered by (address,
sequence), the signed record compared whole before the memory is trusted.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from confide.db import audit
from confide.db.engine import reading
from confide.db.schema import sms_records
from confide.records import MAX_RECORD_BYTES, OwnerRecord, RecordError, SignedRecord
from confide.web.signed import Signed

VERIFIED_KEPT = 4096  # verified records remembered (then forgotten all at once)


class RecordStaleError(RecordError):
    """A record whose sequence is not above the one kept (HTTP 409)."""


class RecordOwnerError(RecordError):
    """A record pushed by a wallet that is not its owner (HTTP 403)."""


def record_json(signed: SignedRecord) -> str:
    return json.dumps(signed.to_json(), sort_keys=True, separators=(",", ":"))


class RecordKeeper:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._verified: dict[tuple[str, int], tuple[SignedRecord, OwnerRecord]] = {}
        self._lock = threading.Lock()

    def verified(self, signed: SignedRecord, deployment: str | None) -> OwnerRecord:
        """``signed``'s record once its owner's signature checks and (given) it names
        ``deployment``; RecordError naming the record otherwise."""
        key = (signed.address, signed.record.sequence)
        with self._lock:
            known = self._verified.get(key)
        if known is not None and known[0] == signed:
            record = known[1]
        else:
            record = signed.verify()
            with self._lock:
                if len(self._verified) >= VERIFIED_KEPT:
                    self._verified.clear()
                self._verified[key] = (signed, record)
        if deployment is not None and record.deployment != deployment:
            signed.verify(deployment)  # raises, naming the record and both deployments
        return record

    def kept(self, address: str, connection: Connection | None = None) -> SignedRecord | None:
        """The record kept for ``address`` (not verified: :meth:`verified` it)."""
        query = select(sms_records.c.signed).where(sms_records.c.address == address.lower())
        if connection is not None:
            text = connection.execute(query).scalar()
        else:
            with reading(self.engine) as reader:
                text = reader.execute(query).scalar()
        if text is None:
            return None
        return SignedRecord.from_json(json.loads(text))

    def push(
        self, signed: SignedRecord, signer: Signed, now: int, deployment: str | None
    ) -> OwnerRecord:
        """A record its owner pushed (``signer`` the request): verified, kept when its
        sequence is above the kept one (RecordStaleError otherwise), with the request's
        nonce and an audit entry, in one transaction."""
        text = record_json(signed)
        if len(text.encode()) > MAX_RECORD_BYTES:
            raise RecordError(f"a record is at most {MAX_RECORD_BYTES} bytes")
        record = self.verified(signed, deployment)
        if signer.address != record.owner:
            raise RecordOwnerError(
                f"{record.kind} record {record.address} ({record.name!r}) is pushed by its "
                f"owner {record.owner}, not by {signer.address}"
            )
        with self.engine.begin() as connection:
            signer.record_in(connection)
            self._keep(connection, record, text, now, "push", stale_is_error=True)
        return record

    def keep_fetched(self, signed: SignedRecord, record: OwnerRecord, now: int) -> None:
        """A verified record the hub served, above the kept one: kept (a concurrent
        writer that kept a higher one first wins, silently)."""
        with self.engine.begin() as connection:
            self._keep(connection, record, record_json(signed), now, "hub", stale_is_error=False)

    def _keep(
        self,
        connection: Connection,
        record: OwnerRecord,
        text: str,
        now: int,
        via: str,
        *,
        stale_is_error: bool,
    ) -> None:
        audit.lock(connection)  # record writers queue here: the read below stays true
        current = connection.execute(
            select(sms_records.c.sequence).where(sms_records.c.address == record.address)
        ).scalar()
        if current is not None and int(current) >= record.sequence:
            if stale_is_error:
                raise RecordStaleError(
                    f"{record.kind} record {record.address} ({record.name!r}): sequence "
                    f"{record.sequence} is not above the kept sequence {int(current)}"
                )
            return
        row: dict[str, Any] = {
            "kind": record.kind,
            "owner": record.owner,
            "sequence": record.sequence,
            "signed": text,
            "kept_at": now,
        }
        if current is None:
            connection.execute(insert(sms_records).values(address=record.address, **row))
        else:
            connection.execute(
                update(sms_records).where(sms_records.c.address == record.address).values(**row)
            )
        audit.append(
            connection,
            at=now,
            actor=record.owner,
            action="record.kept",
            subject=f"{record.kind} {record.address}",
            detail={"name": record.name, "sequence": record.sequence, "via": via},
        )
