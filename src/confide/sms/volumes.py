"""Session volumes: their keys, and the compare-and-swap history of their tags.

A volume's tag names exactly one version of its content (docs/volume-format.md). The sms
keeps the expected tag per session volume and hands it, with the key, to an attested
enclave, whose runtime refuses a volume with another tag (rollback or tampering). A new
tag is accepted from two parties only:

- the enclave, when the app exits: signed with its attested Ed25519 key over (session
  hash, volume, previous tag, new tag, blob digest), and only when the attestation was
  for a service that lists the volume as an **output**;
- the session's owner (a signed request), when pushing an encrypted input volume with
  its key.

Either way the previous tag must still be current (compare-and-swap, enforced by a
UNIQUE constraint, so two replicas cannot both accept an update from the same tag).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from confide.crypto.encoding import lp
from confide.crypto.signing import verify_signature
from confide.db import audit
from confide.db.engine import reading
from confide.db.schema import attestations, volume_tags
from confide.errors import ConfideError
from confide.sms.service import Sms
from confide.sms.sessions import volume_key_ref

TAG_LABEL = b"confide-volume-tag-v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class TagError(ConfideError):
    """A malformed tag update (HTTP 400)."""


class TagForbiddenError(ConfideError):
    """A tag update from someone who may not make it (HTTP 403)."""


class TagConflictError(ConfideError):
    """The previous tag is not current (HTTP 409): a rollback or a concurrent writer."""


@dataclass(frozen=True)
class TagRecord:
    seq: int
    previous_tag: str | None
    tag: str
    blob_digest: str
    reported_by: str
    at: int


def tag_message(
    subject: str, volume: str, previous: str | None, tag: str, blob_digest: str
) -> bytes:
    """What an enclave signs to report an output volume's new tag; ``subject`` is the
    session as its attestation bound it, ``owner/name@hash``."""
    fields = (subject, volume, previous or "", tag, blob_digest)
    return b"".join(lp(f.encode()) for f in fields)


def check_tag(value: str | None, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise TagError(f"{where} is 64 lower-case hex characters")
    return value


class VolumeTags:
    def __init__(self, sms: Sms) -> None:
        self.sms = sms

    def report(
        self,
        *,
        owner: str,
        session: str,
        volume: str,
        previous: str | None,
        tag: str,
        blob_digest: str,
        enclave_key: bytes,
        signature: bytes,
        now: int,
    ) -> TagRecord:
        """An attested enclave reports an output volume's new tag."""
        grant = self._grant_for(enclave_key, f"{owner}/{session}", now)
        digest = grant.subject.rpartition("@")[2]
        version = self.sms.sessions.current_version(owner, session, digest)
        if version is None:
            raise TagForbiddenError(
                f"the enclave was attested for a version of session {owner}/{session} that "
                f"is no longer current: it may not report tags any more"
            )
        service = next(
            (s for s in version.document["services"] if s["name"] == grant.service), None
        )
        modes = {v["name"]: v["mode"] for v in version.document["volumes"]}
        if service is None or volume not in service["volumes"] or modes.get(volume) != "output":
            raise TagForbiddenError(
                f"the enclave was attested for service {grant.service!r}, which does not "
                f"write volume {volume!r} (it is not one of its output volumes)"
            )
        message = tag_message(grant.subject, volume, previous, tag, blob_digest)
        if not verify_signature(enclave_key, TAG_LABEL, message, signature):
            raise TagForbiddenError("the tag update is not signed by the attested enclave")

        def still_current(connection: Connection) -> None:
            # Under the audit log's lock, which a session update takes too: an update
            # that committed since the read above is seen here, and the report refused.
            audit.lock(connection)
            if self.sms.sessions.current_version(owner, session, digest, connection) is None:
                raise TagForbiddenError(
                    f"session {owner}/{session} was updated while the tag was reported: "
                    f"the enclave's version is no longer current"
                )

        return self._append(
            owner,
            session,
            volume,
            previous,
            tag,
            blob_digest,
            enclave_key.hex(),
            now,
            first=still_current,
        )

    def push(
        self,
        *,
        caller: str,
        owner: str,
        session: str,
        volume: str,
        key: bytes,
        previous: str | None,
        tag: str,
        now: int,
        blob_digest: str = "",
    ) -> TagRecord:
        """The session's owner (or an updater) sets an input volume's key and tag, and
        the storage blob that holds that version (``confide volume push``). Each push
        brings a fresh key, kept as a new version of the volume's key in the same
        transaction as the tag: key and tag change together, so a reader of an older
        version holds no key to a newer one."""
        head = self.sms.sessions.current(caller, owner, session, for_update=True)
        modes = {v["name"]: v["mode"] for v in head.document["volumes"]}
        if volume not in modes:
            raise TagError(f"session {owner}/{session} has no volume {volume!r}")
        if modes[volume] != "input":
            raise TagForbiddenError(
                f"volume {volume!r} is an output volume: the sms makes its key, and its tags "
                f"come only from an enclave attested to write it"
            )
        if len(key) != 32:
            raise TagError("a volume key is 32 bytes (64 hex characters)")

        def store_key(connection: Connection) -> None:
            ref = volume_key_ref(owner, session, volume)
            self.sms.secrets.put_in(connection, ref, key, update=None, now=now)

        return self._append(
            owner, session, volume, previous, tag, blob_digest, caller, now, store_key
        )

    def history(self, caller: str, owner: str, session: str, volume: str) -> list[TagRecord]:
        self.sms.sessions.current(caller, owner, session)  # the session's read access
        with reading(self.sms.engine) as connection:
            rows = connection.execute(
                select(volume_tags)
                .where(
                    volume_tags.c.owner == owner,
                    volume_tags.c.session == session,
                    volume_tags.c.volume == volume,
                )
                .order_by(volume_tags.c.seq)
            ).all()
        return [_record(r) for r in rows]

    def _grant_for(self, enclave_key: bytes, scope: str, now: int) -> _Grant:
        with reading(self.sms.engine) as connection:
            row = connection.execute(
                select(attestations.c.subject, attestations.c.service)
                .where(
                    attestations.c.ed25519_public == enclave_key.hex(),
                    attestations.c.scope == scope,
                    attestations.c.expires_at > now,
                )
                .order_by(attestations.c.created_at.desc())
                .limit(1)
            ).first()
        if row is None:
            raise TagForbiddenError(
                f"no current attestation of this enclave key for session {scope}"
            )
        return _Grant(str(row.subject), str(row.service))

    def _append(
        self,
        owner: str,
        session: str,
        volume: str,
        previous: str | None,
        tag: str,
        blob_digest: str,
        reported_by: str,
        now: int,
        also: Callable[[Connection], None] | None = None,
        first: Callable[[Connection], None] | None = None,
    ) -> TagRecord:
        """The compare-and-swap, in one transaction: ``first`` runs at its start (a
        recheck), ``also`` before the new entry is written (a key stored with it)."""
        try:
            with self.sms.engine.begin() as connection:
                if first is not None:
                    first(connection)
                head = latest_tag(connection, owner, session, volume)
                current = None if head is None else head.tag
                if current != previous:
                    raise TagConflictError(
                        f"volume {volume!r}: previous tag {previous or 'none'} is not the "
                        f"current tag {current or 'none'} (a rollback, or another writer)"
                    )
                seen = connection.execute(
                    select(volume_tags.c.seq).where(
                        volume_tags.c.owner == owner,
                        volume_tags.c.session == session,
                        volume_tags.c.volume == volume,
                        volume_tags.c.tag == tag,
                    )
                ).first()
                if seen is not None:
                    raise TagConflictError(
                        f"volume {volume!r}: tag {tag} was this volume's tag before (entry "
                        f"{seen.seq}): going back to it would be a rollback"
                    )
                seq = 0 if head is None else int(head.seq) + 1
                if also is not None:
                    also(connection)
                connection.execute(
                    insert(volume_tags).values(
                        owner=owner,
                        session=session,
                        volume=volume,
                        seq=seq,
                        previous_tag=previous or "",
                        tag=tag,
                        blob_digest=blob_digest,
                        reported_by=reported_by,
                        at=now,
                    )
                )
                audit.append(
                    connection,
                    at=now,
                    actor=reported_by,
                    action="volume.tag",
                    subject=f"{owner}/{session}/{volume}",
                    detail={"seq": seq, "previous": previous, "tag": tag},
                )
        except IntegrityError:
            raise TagConflictError(
                f"volume {volume!r}: tag {tag} was reported before, or another writer won"
            ) from None
        return TagRecord(seq, previous, tag, blob_digest, reported_by, now)


def latest_tag(connection: Connection, owner: str, session: str, volume: str) -> TagRecord | None:
    """The volume's current version: its newest tag entry (None before the first)."""
    row = connection.execute(
        select(volume_tags)
        .where(
            volume_tags.c.owner == owner,
            volume_tags.c.session == session,
            volume_tags.c.volume == volume,
        )
        .order_by(volume_tags.c.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else _record(row)


@dataclass(frozen=True)
class _Grant:
    subject: str
    service: str


def _record(row: Any) -> TagRecord:
    return TagRecord(
        int(row.seq),
        row.previous_tag or None,
        row.tag,
        row.blob_digest,
        row.reported_by,
        int(row.at),
    )
