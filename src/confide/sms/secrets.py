"""The secret store: create-only by default, versioned updates, never a value in the clear.

Kinds (docs/architecture.md, "Secrets"): the app developer secret (index ``1``, the app's owner),
named requester secrets, dataset keys (the dataset's owner) and result-encryption public
keys. A push creates version 1 and refuses an existing secret (409, as iExec); an update
adds a version (rotation); old versions are never released again. Every write is one
audit entry naming the secret and its version, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from confide.crypto.envelope import (
    KeyEncryptionKey,
    SealedValue,
    SecretContext,
    open_value,
    seal_value,
)
from confide.db import audit
from confide.db.engine import reading
from confide.errors import SecretError
from confide.names import NAME
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secret_queries import (
    BATCH,
    INSERT,
    MAX_VERSION,
    batch_params,
    batches,
    key_params,
    latest_of,
    present_of,
)

__all__ = [  # BATCH is re-exported: the HTTP layer batches HEAD checks by it
    "BATCH",
    "DEFAULT_POLICY",
    "KINDS",
    "MAX_VALUE_BYTES",
    "SECRET_NAME",
    "SecretExistsError",
    "SecretNotFoundError",
    "SecretRef",
    "SecretStore",
    "StoredSecret",
    "checked",
    "result_key_ref",
]

MAX_VALUE_BYTES = 64 * 1024
KINDS = ("app", "requester", "dataset", "result-key", "session", "volume")
SECRET_NAME = NAME  # the name rule of confide.names
DEFAULT_POLICY = ReleasePolicy()  # hardware TEEs at UpToDate; sim only where the sms allows


class SecretExistsError(SecretError):
    """Create-only push of a secret that exists (HTTP 409)."""


class SecretNotFoundError(SecretError):
    """No such secret (HTTP 404)."""


@dataclass(frozen=True)
class StoredSecret:
    """A secret's current version as released: its value and its owner's release policy."""

    version: int
    value: bytes = field(repr=False)
    policy: ReleasePolicy


@dataclass(frozen=True)
class SecretRef:
    owner: str  # lower-case wallet address
    kind: str
    name: str
    subject: str = ""  # the app or dataset address for app and dataset secrets

    def check(self) -> None:
        if self.kind not in KINDS:
            raise SecretError(f"unknown secret kind {self.kind!r}")
        if not SECRET_NAME.fullmatch(self.name):
            raise SecretError(
                f"secret name {self.name!r} is not allowed: 1 to 64 of A-Z a-z 0-9 _ -"
            )

    def label(self) -> str:
        return f"{self.kind}/{self.subject + '/' if self.subject else ''}{self.name}"


class SecretStore:
    def __init__(
        self,
        engine: Engine,
        kek: KeyEncryptionKey,
        older_keks: tuple[KeyEncryptionKey, ...] = (),
        cache_size: int = 65536,
    ) -> None:
        self._engine = engine
        self._kek = kek
        self._keks = {k.kek_id: k for k in (*older_keks, kek)}
        # Secrets found to exist. Nothing in the sms deletes a secret (a push adds a
        # version), so one that existed exists: remembered, it is answered without a read
        # (a HEAD check). One not found is read every time: another replica may write it.
        self._existing: set[SecretRef] = set()
        self._cache_size = cache_size

    def put(
        self,
        ref: SecretRef,
        value: bytes,
        *,
        update: bool | None,
        now: int,
        policy: ReleasePolicy = DEFAULT_POLICY,
    ) -> int:
        """Store ``value`` under ``policy``; return its version. Create-only unless
        ``update``; ``update=None`` creates or adds a version (result keys)."""
        try:
            with self._engine.begin() as connection:
                version = self.put_in(connection, ref, value, update=update, now=now, policy=policy)
        except IntegrityError:
            raise SecretExistsError(f"secret {ref.label()} was written concurrently") from None
        self._remember(ref)  # committed
        return version

    def put_in(
        self,
        connection: Connection,
        ref: SecretRef,
        value: bytes,
        *,
        update: bool | None,
        now: int,
        policy: ReleasePolicy = DEFAULT_POLICY,
    ) -> int:
        """:meth:`put` inside the caller's transaction (with the write it belongs to).

        The audit log's lock is taken first, before the row: every writer takes its locks
        in that order (a grant storing an output volume's key does), so two cannot each
        hold what the other waits for.
        """
        ref.check()
        if len(value) > MAX_VALUE_BYTES:
            raise SecretError(f"a secret value is at most {MAX_VALUE_BYTES} bytes (64 KiB)")
        audit.lock(connection)
        current = self.current_version(connection, ref)
        if current is not None and update is False:
            raise SecretExistsError(
                f"secret {ref.label()} exists (version {current}); use --update to "
                f"add a new version"
            )
        if current is None and update is True:
            raise SecretNotFoundError(f"secret {ref.label()} does not exist yet")
        version = (current or 0) + 1
        row_id = os.urandom(16).hex()
        canonical_policy = policy.canonical()
        context = SecretContext(
            row_id, ref.owner, ref.kind, ref.name, version, ref.subject, canonical_policy
        )
        sealed = seal_value(self._kek, value, context)
        INSERT.execute(
            connection,
            {
                "row_id": row_id,
                "owner": ref.owner,
                "kind": ref.kind,
                "name": ref.name,
                "subject": ref.subject,
                "version": version,
                "kek_id": sealed.kek_id,
                "wrapped_key": sealed.wrapped_key,
                "ciphertext": sealed.ciphertext,
                "created_at": now,
                "policy": canonical_policy,
            },
        )
        detail: dict[str, object] = {"version": version}
        if canonical_policy:
            detail["policy"] = policy.to_json()
        audit.append(
            connection,
            at=now,
            actor=ref.owner,
            action="secret.write",
            subject=ref.label(),
            detail=detail,
        )
        return version

    def exists(self, ref: SecretRef) -> bool:
        """Whether ``ref`` has a version: :meth:`known` without a read, else read."""
        return ref in self.exists_many([ref])

    def exists_many(
        self, refs: Sequence[SecretRef], connection: Connection | None = None
    ) -> set[SecretRef]:
        """Those of ``refs`` that have a version: the ones :meth:`known`, and the others
        read by one statement per :data:`BATCH` (HEAD checks that arrived together,
        confide.sms.batching), on ``connection`` or a read of their own."""
        wanted = checked(refs)
        found = {ref for ref in wanted if self.known(ref)}
        unknown = [ref for ref in wanted if ref not in found]
        if unknown and connection is not None:
            found |= _present(unknown, connection)
        elif unknown:
            with reading(self._engine) as own:
                found |= _present(unknown, own)
        for ref in found:
            self._remember(ref)  # committed reads
        return found

    def known(self, ref: SecretRef) -> bool:
        """Whether this store has seen ``ref`` exist (it still does: nothing deletes a
        secret); False says nothing, the database must be read."""
        return ref in self._existing

    def committed(self, ref: SecretRef) -> None:
        """A write of ``ref`` made with :meth:`put_in` in a caller's transaction has
        committed: it exists (remembered, as after :meth:`put`)."""
        self._remember(ref)

    def _remember(self, ref: SecretRef) -> None:
        if len(self._existing) >= self._cache_size:
            self._existing.clear()
        self._existing.add(ref)

    def latest(self, ref: SecretRef, connection: Connection | None = None) -> tuple[int, bytes]:
        """The current version and value. Callers: a release to an attested enclave, the
        public result key (a public key), the sms's own bookkeeping (generated session
        secrets carried to a new version, volume keys), and a volume key sealed to a
        reader of its session (:mod:`confide.sms.volume_keys`); never a plain value in a
        response to a wallet."""
        stored = self.release(ref, connection)
        return stored.version, stored.value

    def release(self, ref: SecretRef, connection: Connection | None = None) -> StoredSecret:
        """The current version, its value and release policy, for a release to an attested
        enclave only. The policy is authenticated with the value: one edited in the database
        makes the secret unreleasable (SecretError), never more widely released."""
        if connection is None:
            with reading(self._engine) as own:
                found = self.release_many([ref], own)
        else:
            found = self.release_many([ref], connection)
        if ref not in found:
            raise SecretNotFoundError(f"secret {ref.label()} does not exist")
        return found[ref]

    def release_many(
        self, refs: Sequence[SecretRef], connection: Connection
    ) -> dict[SecretRef, StoredSecret]:
        """:meth:`release` of each of ``refs`` that exists (one that does not is left out),
        read by one statement per :data:`BATCH` references: an attestation's plan reads
        all its secrets at once, not one round trip each."""
        wanted = checked(refs)
        rows: list[Any] = []
        for chunk in batches(wanted):
            rows += latest_of(len(chunk)).all(connection, batch_params(chunk))
        return self.open_rows(wanted, rows)

    def open_rows(
        self, refs: Sequence[SecretRef], rows: Iterable[Any]
    ) -> dict[SecretRef, StoredSecret]:
        """:meth:`release_many`'s answer from rows of
        :func:`confide.sms.secret_queries.latest_rows` (read by a caller
        that reads more in the same statement): a row without a ``row_id`` is none."""
        by_identity = {_identity(row): row for row in rows if row.row_id is not None}
        found = {}
        for ref in refs:
            row = by_identity.get(_identity(ref))
            if row is not None:
                found[ref] = self._open(row)
        return found

    def _open(self, row: Any) -> StoredSecret:
        context = SecretContext(
            row.row_id, row.owner, row.kind, row.name, int(row.version), row.subject, row.policy
        )
        sealed = SealedValue(row.kek_id, bytes(row.wrapped_key), bytes(row.ciphertext))
        value = open_value(self._keks, sealed, context)  # authenticates the policy too
        return StoredSecret(int(row.version), value, ReleasePolicy.from_json(row.policy))

    def current_version(self, connection: Connection, ref: SecretRef) -> int | None:
        """The current version number of ``ref`` (None: none), read on ``connection``."""
        found = MAX_VERSION.first(connection, key_params(ref))
        return None if found is None or found[0] is None else int(found[0])


def checked(refs: Iterable[SecretRef]) -> list[SecretRef]:
    """``refs`` once each, in order, each checked (SecretError for a malformed one)."""
    wanted = list(dict.fromkeys(refs))
    for ref in wanted:
        ref.check()
    return wanted


def _present(refs: Sequence[SecretRef], connection: Connection) -> set[SecretRef]:
    """Those of ``refs`` that have a version, read on ``connection``."""
    found: set[SecretRef] = set()
    for chunk in batches(refs):
        rows = present_of(len(chunk)).all(connection, batch_params(chunk))
        keys = {_identity(row) for row in rows}
        found.update(ref for ref in chunk if _identity(ref) in keys)
    return found


def _identity(item: SecretRef | Any) -> tuple[str, str, str, str]:
    """What names a secret, of a :class:`SecretRef` or of a row of ``secrets``."""
    return item.owner, item.kind, item.subject, item.name


def result_key_ref(requester: str) -> SecretRef:
    """Where a requester's result-encryption public key is kept (every push a version)."""
    return SecretRef(requester, "result-key", "result-key")
