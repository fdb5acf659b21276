"""The CAS session store: owner namespaces, every version kept, compare-and-swap updates.

A session is created once per (owner, name); an update must name the current version's
hash as ``predecessor``, so two concurrent updates cannot both win and nobody overwrites
a version they have not seen. Secret values go to the secret store (kind ``session``,
subject = the session name), so the stored document, its hash and its history never hold
one; a secret without a value is generated (32 random bytes, as hex). Reads and updates
follow the session's access policy (``owner`` or wallet addresses); the owner may always
read and update their session, whatever the policy lists, so no updater can lock them
out. In another owner's namespace, a session that the caller may neither read nor update
answers exactly as one that does not exist, so its existence does not leak. A volume
keeps its mode for the session's whole life: an input volume's key and tag are the
owner's to push, so an input turned output would hand an enclave a key and tag the owner
planted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.selectable import Exists

from confide.db import audit
from confide.db.direct import DirectStatement
from confide.db.engine import reading
from confide.db.schema import sessions
from confide.errors import SessionError
from confide.sms.secrets import SecretRef, SecretStore
from confide.sms.session_document import SessionDocument

Also = Callable[[Connection], None]


class SessionNotFoundError(SessionError):
    """No such session in the caller's own namespace (HTTP 404)."""


class SessionConflictError(SessionError):
    """Create of an existing session, or update from a stale predecessor (HTTP 409).

    ``current_hash`` is the session's current hash when it is known (always for an
    update), for the problem body: the caller bases a new update on it."""

    def __init__(self, message: str, current_hash: str | None = None) -> None:
        super().__init__(message)
        self.current_hash = current_hash


class SessionForbiddenError(SessionError):
    """The caller may not read or update this session, or it does not exist in another
    owner's namespace: one answer for both, so existence does not leak (HTTP 403)."""


@dataclass(frozen=True)
class StoredSession:
    owner: str
    name: str
    hash: str
    predecessor: str | None
    document: dict[str, Any]
    created_at: int


class SessionStore:
    def __init__(self, engine: Engine, secrets: SecretStore, cache_size: int = 1024) -> None:
        self._engine = engine
        self._secrets = secrets
        # Versions read by (owner, name, hash): a version's row is never changed or
        # deleted, so its parsed form can be kept; whether it is current cannot.
        self._versions: dict[tuple[str, str, str], StoredSession] = {}
        self._cache_size = cache_size

    def create(
        self, owner: str, document: SessionDocument, now: int, also: Also | None = None
    ) -> StoredSession:
        """``also`` runs first inside the write's transaction (the request's replay record)."""
        if document.predecessor is not None:
            raise SessionError("a new session has no predecessor (predecessor: null)")
        return self._write(owner, owner, document, now, expected_head=None, also=also)

    def update(
        self, caller: str, owner: str, document: SessionDocument, now: int, also: Also | None = None
    ) -> StoredSession:
        history = self._permitted(caller, owner, document.name, for_update=True)
        head = history[-1]
        if document.predecessor != head.hash:
            raise SessionConflictError(
                f"session {owner}/{document.name}: predecessor "
                f"{document.predecessor or 'null'} is not the current hash {head.hash}; "
                f"fetch the session and base your update on it",
                current_hash=head.hash,
            )
        _check_volume_modes(history, document)
        return self._write(caller, owner, document, now, expected_head=head.hash, also=also)

    def current(
        self, caller: str, owner: str, name: str, *, for_update: bool = False
    ) -> StoredSession:
        return self._permitted(caller, owner, name, for_update=for_update)[-1]

    def _permitted(
        self, caller: str, owner: str, name: str, *, for_update: bool = False
    ) -> list[StoredSession]:
        """The session's history if ``caller`` may read it (``for_update``: update it).
        In another owner's namespace a missing session and one the caller may neither
        read nor update are one answer, word for word (403), so existence does not leak;
        in the caller's own namespace a missing session is 404."""
        history = self._history(owner, name)
        may_read = bool(history) and _permits(history[-1], "read", caller)
        may_update = bool(history) and _permits(history[-1], "update", caller)
        if may_update if for_update else may_read:
            return history
        if not (may_read or may_update):  # whether it exists is none of the caller's business
            message = f"no session {name!r} of {owner} that you may read"
            if caller == owner:
                raise SessionNotFoundError(message)
            raise SessionForbiddenError(message)
        what = "update" if for_update else "read"
        raise SessionForbiddenError(f"{caller} may not {what} session {owner}/{name}")

    def known_version(self, owner: str, name: str, digest: str) -> StoredSession | None:
        """Version ``digest`` if this store has read it before (without a read): it
        existed then, and nothing deletes a version, but it may have been superseded
        since. An attestation uses it and checks that no successor exists in its grant's
        transaction."""
        return self._versions.get((owner, name, digest))

    def current_version(
        self, owner: str, name: str, digest: str, connection: Connection | None = None
    ) -> StoredSession | None:
        """Version ``digest`` if it is the session's current one, else None; without an
        access check (for attestation). One indexed read (on ``connection`` if given):
        the version exists and no version names it as its predecessor. Versions form one
        chain from the first (each update names the head it replaces, UNIQUE per
        predecessor, nothing is deleted), so the version without a successor is the head.
        The parsed document is remembered per version (so it is shared: read it, never
        change it); whether the version is current is read every time (and again in the
        grant's transaction)."""
        key = (owner, name, digest)
        cached = self._versions.get(key)
        params = {"owner": owner, "name": name, "hash": digest}
        if connection is None:
            with reading(self._engine) as own:
                row = (_IS_CURRENT if cached else _CURRENT).first(own, params)
        else:
            row = (_IS_CURRENT if cached else _CURRENT).first(connection, params)
        if row is None:
            return None
        if cached is not None:
            return cached
        found = StoredSession(
            owner,
            name,
            digest,
            row.predecessor or None,
            json.loads(row.document),
            int(row.created_at),
        )
        if len(self._versions) >= self._cache_size:
            self._versions.clear()
        self._versions[key] = found
        return found

    def history(self, caller: str, owner: str, name: str) -> list[StoredSession]:
        self.current(caller, owner, name)  # access check
        return self._history(owner, name)

    def _history(self, owner: str, name: str) -> list[StoredSession]:
        with reading(self._engine) as connection:
            rows = connection.execute(
                select(sessions)
                .where(sessions.c.owner == owner, sessions.c.name == name)
                .order_by(sessions.c.created_at, sessions.c.hash)
            ).all()
        by_predecessor = {row.predecessor: row for row in rows}
        chain: list[StoredSession] = []
        cursor = ""
        while cursor in by_predecessor:  # follow predecessor links from the first version
            row = by_predecessor[cursor]
            chain.append(
                StoredSession(
                    row.owner,
                    row.name,
                    row.hash,
                    row.predecessor or None,
                    json.loads(row.document),
                    int(row.created_at),
                )
            )
            cursor = row.hash
        return chain

    def _write(
        self,
        actor: str,
        owner: str,
        document: SessionDocument,
        now: int,
        expected_head: str | None,
        also: Also | None = None,
    ) -> StoredSession:
        canonical = document.canonical()
        digest = document.session_hash()
        carried = self._generated_values(owner, document, expected_head)
        try:
            with self._engine.begin() as connection:
                if also is not None:
                    also(connection)
                connection.execute(
                    insert(sessions).values(
                        owner=owner,
                        name=document.name,
                        hash=digest,
                        predecessor=expected_head or "",
                        document=json.dumps(canonical, sort_keys=True),
                        created_at=now,
                    )
                )
                audit.append(
                    connection,
                    at=now,
                    actor=actor,
                    action="session.write",
                    subject=f"{owner}/{document.name}",
                    detail={"hash": digest, "predecessor": expected_head},
                )
                for secret in document.secrets:  # in the same transaction: all or nothing
                    if secret.value is not None:
                        value = secret.value.encode()
                    else:
                        value = carried.get(secret.name) or os.urandom(32).hex().encode()
                    ref = session_secret_ref(owner, document.name, digest, secret.name)
                    self._secrets.put_in(connection, ref, value, update=False, now=now)
        except IntegrityError:
            history = self._history(owner, document.name)
            current = history[-1].hash if history else None
            what = "already exists" if expected_head is None else "was updated concurrently"
            raise SessionConflictError(
                f"session {owner}/{document.name} {what}: the current hash is "
                f"{current or 'unknown'}; fetch the session and base your update on it",
                current_hash=current,
            ) from None
        return StoredSession(owner, document.name, digest, expected_head, canonical, now)

    def _generated_values(
        self, owner: str, document: SessionDocument, predecessor: str | None
    ) -> dict[str, bytes]:
        """The values of generated secrets that the predecessor version generated too (same
        name and kind): an update keeps them, so data sealed under a generated key stays
        readable. A secret given a value, or declared anew, gets that value or a new one."""
        if predecessor is None:
            return {}
        previous = self.current_version(owner, document.name, predecessor)
        if previous is None:
            return {}
        generated_before = {
            s["name"]: s["kind"] for s in previous.document["secrets"] if s["value"] is None
        }
        carried = {}
        for secret in document.secrets:
            if secret.value is None and generated_before.get(secret.name) == secret.kind:
                ref = session_secret_ref(owner, document.name, predecessor, secret.name)
                carried[secret.name] = self._secrets.latest(ref)[1]
        return carried


# Built once, values bound at execution (see confide.sms.secrets).
_successor = sessions.alias("successor")
_SUCCESSOR = select(_successor.c.hash).where(
    _successor.c.owner == bindparam("owner"),
    _successor.c.name == bindparam("name"),
    _successor.c.predecessor == bindparam("hash"),
)
_THIS_AND_CURRENT = (
    sessions.c.owner == bindparam("owner"),
    sessions.c.name == bindparam("name"),
    sessions.c.hash == bindparam("hash"),
    ~exists(_SUCCESSOR),
)
_CURRENT = DirectStatement(
    select(sessions.c.predecessor, sessions.c.document, sessions.c.created_at).where(
        *_THIS_AND_CURRENT
    )
)
_IS_CURRENT = DirectStatement(select(sessions.c.created_at).where(*_THIS_AND_CURRENT))


def successor_exists() -> Exists:
    """Whether a version names version ``:hash`` of session ``:owner``/``:name`` as its
    predecessor (bound parameters ``owner``, ``name``, ``hash``): for a statement that
    checks it with other things."""
    return exists(_SUCCESSOR)


def volume_key_ref(owner: str, session: str, volume: str) -> SecretRef:
    """Where a session's volume key is kept (one for every version of the session)."""
    return SecretRef(owner, "volume", volume, subject=session)


def session_secret_ref(owner: str, session: str, digest: str, secret: str) -> SecretRef:
    """Where a session version's secret is kept: the store writes and the release reads
    this one reference."""
    return SecretRef(owner, "session", secret, subject=f"{session}@{digest[:16]}")


def _permits(head: StoredSession, what: str, caller: str) -> bool:
    """Whether ``caller`` may ``what`` (read, update) the session: its owner always, so
    a policy written by an updater cannot lock the owner out; else whom it lists."""
    allowed: list[str] = head.document["access_policy"][what]
    return caller == head.owner or caller in allowed


def _check_volume_modes(history: list[StoredSession], document: SessionDocument) -> None:
    """A volume keeps the mode it was first declared with, in every later version (also
    after a version that dropped it): an input volume's key and tag come from the owner,
    and an output volume's are handed to the enclave that writes it, so a mode flip
    would let the owner plant them."""
    modes: dict[str, str] = {}
    for version in history:
        for volume in version.document["volumes"]:
            modes.setdefault(volume["name"], volume["mode"])
    for volume in document.volumes:
        earlier = modes.get(volume.name, volume.mode)
        if earlier != volume.mode:
            raise SessionError(
                f"volume {volume.name!r} of session {history[-1].owner}/{document.name} "
                f"is an {earlier} volume: its mode cannot change to {volume.mode} "
                f"(declare a volume with another name)"
            )
