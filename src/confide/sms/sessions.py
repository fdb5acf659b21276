"""The CAS session store: owner namespaces, every version kept, compare-and-swap updates.

A session is created once per (owner, name); an update must name the current version's
hash as ``predecessor``, so two concurrent updates cannot both win and nobody overwrites
a version they have not seen. Secret values go to the secret store (kind ``session``,
subject = the session name), so the stored document, its hash and its history never hold
one; a secret without a value is generated (32 random bytes, as hex). Reads and updates
follow the session's access policy (``owner`` or wallet addresses).
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
    """No such session in that owner's namespace (HTTP 404)."""


class SessionConflictError(SessionError):
    """Create of an existing session, or update from a stale predecessor (HTTP 409)."""


class SessionForbiddenError(SessionError):
    """The caller may not read or update this session (HTTP 403)."""


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
        head = self.current(caller, owner, document.name, for_update=True)
        if document.predecessor != head.hash:
            raise SessionConflictError(
                f"session {owner}/{document.name}: predecessor "
                f"{document.predecessor or 'null'} is not the current hash {head.hash}; "
                f"fetch the session and base your update on it"
            )
        return self._write(caller, owner, document, now, expected_head=head.hash, also=also)

    def current(
        self, caller: str, owner: str, name: str, *, for_update: bool = False
    ) -> StoredSession:
        history = self._history(owner, name)
        if not history:
            raise SessionNotFoundError(f"no session {name!r} in {owner}'s namespace")
        head = history[-1]
        allowed = head.document["access_policy"]["update" if for_update else "read"]
        if not _permits(allowed, caller, owner):
            what = "update" if for_update else "read"
            raise SessionForbiddenError(f"{caller} may not {what} session {owner}/{name}")
        return head

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
            raise SessionConflictError(
                f"session {owner}/{document.name} "
                + ("already exists" if expected_head is None else "was updated concurrently")
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


def _permits(allowed: list[str], caller: str, owner: str) -> bool:
    return any(entry == caller or (entry == "owner" and caller == owner) for entry in allowed)
