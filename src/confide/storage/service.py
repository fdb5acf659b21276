"""The storage core: configuration, identity, who may read which blob, quotas; no HTTP.

Blobs are content-addressed: stored under their SHA-256, written once, never changed.
The storage is untrusted (docs/storage.md): it holds ciphertext and digests, and a blob
is read only by one of its uploaders (a signed request) or by a wallet that holds a
grant for it from the hub or the sms (a signed request from that wallet with the grant),
so knowing a digest is not enough. Each uploader pays for a blob once in his quota.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from confide import __version__
from confide.crypto.info_proof import request_audience
from confide.crypto.tokens import public_jwk
from confide.db import make_engine, upgrade
from confide.db.engine import reading
from confide.db.identity import load_identity
from confide.errors import AuthError, ConfideError, StorageError
from confide.grants import check_grant
from confide.storage.backend import Backend, BlobNotFoundError, check_digest, consume
from confide.storage.tables import storage_blobs, storage_uploaders, storage_usage

SERVICE = "storage"  # this service's rows in confide.db.identity
GIB = 1 << 30


class BlobTooLargeError(StorageError):
    """The blob is larger than this storage takes (413)."""


class QuotaExceededError(StorageError):
    """The uploader's quota would be exceeded (507, with the figures)."""

    def __init__(self, message: str, *, used_bytes: int, quota_bytes: int, size: int) -> None:
        super().__init__(message)
        self.used_bytes, self.quota_bytes, self.size = used_bytes, quota_bytes, size


class ReadForbiddenError(StorageError):
    """A signed reader that is neither an uploader of the blob nor a grantee (403)."""


class GrantRefusedError(StorageError):
    """A grant that does not check out (403, naming the check)."""


@dataclass(frozen=True)
class StorageConfig:
    home: Path  # $CONFIDE_HOME/storage: the deployment id and the signing key live here
    db_url: str
    deployment_id: str = ""  # "": home/deployment-id, else the database's, else a new one
    quota_bytes: int = 10 * GIB  # per wallet
    max_blob_bytes: int = 64 * GIB
    signing_key_file: Path | None = None  # None: home/signing-key, made at first start


@dataclass(frozen=True)
class Stored:
    """What an upload did: the blob, its size, whether its bytes are new here."""

    digest: str
    size: int
    created: bool


Record = Callable[[Connection], None]  # records a request's nonce in the effect's transaction


class Storage:
    """Everything the storage knows and does, callable without a server. ``issuers``:
    the audiences whose grants are accepted, with each one's Ed25519 public key."""

    def __init__(
        self,
        config: StorageConfig,
        backend: Backend,
        issuers: Mapping[str, bytes],
        engine: Engine | None = None,
    ) -> None:
        if config.quota_bytes < 0 or config.max_blob_bytes < 0:
            raise ConfideError("the quota and the largest blob are sizes: 0 or more bytes")
        self.config = config
        self.backend = backend
        self.issuers = dict(issuers)
        self.engine = engine or make_engine(config.db_url)
        upgrade(self.engine)
        deployment, self.signing_key = load_identity(
            self.engine,
            SERVICE,
            config.home,
            deployment_id=config.deployment_id,
            key_file=config.signing_key_file,
        )
        self.config = config = dataclasses.replace(config, deployment_id=deployment)
        self.audience = request_audience(
            config.deployment_id, self.signing_key.public_bytes(), SERVICE
        )

    def info(self) -> dict[str, object]:
        return {
            "service": SERVICE,
            "version": __version__,
            "deployment_id": self.config.deployment_id,
            "audience": self.audience,
            "jwks": {"keys": [public_jwk(self.signing_key.public_bytes())]},
            "quota_bytes": self.config.quota_bytes,
            "max_blob_bytes": self.config.max_blob_bytes,
            "issuers": sorted(self.issuers),
        }

    # -- uploads

    def admit(self, digest: str, size: int, uploader: str) -> None:
        """The checks an upload passes before a byte of it is read: the digest's form,
        the size limit, and the quota (from the announced size)."""
        check_digest(digest)
        limit = self.config.max_blob_bytes
        if size > limit:
            raise BlobTooLargeError(f"a blob is at most {limit} bytes; this one is {size}")
        with reading(self.engine) as connection:
            if _uploaded_by(connection, digest, uploader):
                return  # counted already: a re-upload costs nothing
            used = _usage(connection, uploader)
        self._check_quota(used, size, uploader)

    def put(
        self,
        digest: str,
        size: int,
        chunks: Iterable[bytes],
        uploader: str,
        now: int,
        record: Record | None = None,
    ) -> Stored:
        """Store ``chunks`` (exactly ``size`` bytes hashing to ``digest``) for
        ``uploader``; ``record`` runs in the metadata's transaction (a request's nonce).
        Bytes stored already are read and checked but not written again: the uploader
        proves he has them, then becomes one of the blob's uploaders."""
        self.admit(digest, size, uploader)
        added: list[bool] = []  # set once the metadata is committed

        def commit_metadata() -> None:
            with self.engine.begin() as connection:
                if record is not None:
                    record(connection)
                added.append(self._add_uploader(connection, digest, size, uploader, now))

        if self.backend.size(digest) == size:
            consume(digest, size, chunks)
            commit_metadata()
            return Stored(digest, size, created=False)
        try:
            self.backend.put(digest, size, chunks, before_publish=commit_metadata)
        except Exception:
            if added and added[0]:  # committed, then the bytes could not be published
                self._forget_uploader(digest, size, uploader)
            raise
        return Stored(digest, size, created=True)

    def _forget_uploader(self, digest: str, size: int, uploader: str) -> None:
        """Undo :meth:`_add_uploader` for a blob whose bytes could not be published (the
        blob's row goes too when no other uploader has it), so no metadata names bytes
        that are not there and the uploader is not charged for them."""
        with self.engine.begin() as connection:
            connection.execute(
                delete(storage_uploaders).where(
                    storage_uploaders.c.digest == digest, storage_uploaders.c.address == uploader
                )
            )
            connection.execute(
                update(storage_usage)
                .where(storage_usage.c.address == uploader)
                .values(used_bytes=storage_usage.c.used_bytes - size)
            )
            others = select(storage_uploaders.c.digest).where(storage_uploaders.c.digest == digest)
            connection.execute(
                delete(storage_blobs).where(storage_blobs.c.digest == digest, ~others.exists())
            )

    def _add_uploader(
        self, connection: Connection, digest: str, size: int, uploader: str, now: int
    ) -> bool:
        """The blob's row, the uploader's, and his usage counted (once), or
        QuotaExceededError (the transaction rolls back); whether he is a new uploader."""
        blob = {"digest": digest, "size": size, "created_at": now}
        _inserted(connection, storage_blobs, blob)
        row = {"digest": digest, "address": uploader, "size": size, "uploaded_at": now}
        if not _inserted(connection, storage_uploaders, row):
            return False  # his already: counted
        # Counted in one conditional statement, so that concurrent uploads cannot both
        # pass; a wallet's first upload makes its row (and, should a concurrent first
        # upload make it first, the increment is tried again on that row).
        if self._grow_usage(connection, uploader, size):
            return True
        first = {"address": uploader, "used_bytes": size}
        if size <= self.config.quota_bytes and _inserted(connection, storage_usage, first):
            return True
        if self._grow_usage(connection, uploader, size):
            return True
        self._check_quota(_usage(connection, uploader), size, uploader)
        raise ConfideError("the usage of this wallet changed concurrently: retry")

    def _grow_usage(self, connection: Connection, uploader: str, size: int) -> bool:
        grown = connection.execute(
            update(storage_usage)
            .where(storage_usage.c.address == uploader)
            .where(storage_usage.c.used_bytes + size <= self.config.quota_bytes)
            .values(used_bytes=storage_usage.c.used_bytes + size)
            .returning(storage_usage.c.used_bytes)
        )
        return grown.first() is not None

    def _check_quota(self, used: int, size: int, uploader: str) -> None:
        quota = self.config.quota_bytes
        if used + size > quota:
            raise QuotaExceededError(
                f"{uploader} uses {used} of a {quota}-byte quota; {size} more bytes "
                f"would exceed it",
                used_bytes=used,
                quota_bytes=quota,
                size=size,
            )

    def usage(self, address: str) -> int:
        with reading(self.engine) as connection:
            return _usage(connection, address)

    # -- reads

    def authorize_read(self, digest: str, reader: str, grant: str | None, now: int) -> int:
        """The size of blob ``digest`` if ``reader`` (a verified signer) may read it: he
        is one of its uploaders, or ``grant`` is a valid grant of it to him that names
        one of its uploaders. A reader
        who is neither learns nothing of whether the blob exists (403 either way)."""
        check_digest(digest)
        granted = None
        if grant is not None:
            try:
                granted = check_grant(
                    grant, issuers=self.issuers, digest=digest, grantee=reader, now=now
                )
            except AuthError as exc:
                raise GrantRefusedError(f"grant refused: {exc}") from None
        with reading(self.engine) as connection:
            if granted is None and not _uploaded_by(connection, digest, reader):
                raise ReadForbiddenError(
                    f"{reader} neither uploaded blob {digest} nor holds a grant for it"
                )
            size = connection.execute(
                select(storage_blobs.c.size).where(storage_blobs.c.digest == digest)
            ).scalar()
            if size is None:  # (a grant names the blob: its holder may learn it is missing)
                raise BlobNotFoundError(f"no blob {digest}")
            # a grant reaches no further than its uploader could read itself: a record or
            # a report may name any digest, the bytes only their uploaders have
            if granted is not None and not _uploaded_by(connection, digest, granted.uploader):
                raise GrantRefusedError(
                    f"grant refused: it vouches for {granted.uploader}, who did not upload "
                    f"blob {digest}"
                )
        return int(size)


def _uploaded_by(connection: Connection, digest: str, address: str) -> bool:
    query = select(storage_uploaders.c.size).where(
        storage_uploaders.c.digest == digest, storage_uploaders.c.address == address
    )
    return connection.execute(query).first() is not None


def _usage(connection: Connection, address: str) -> int:
    query = select(storage_usage.c.used_bytes).where(storage_usage.c.address == address)
    return int(connection.execute(query).scalar() or 0)


def _inserted(connection: Connection, table: Table, row: dict[str, object]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING (SQLite and PostgreSQL): whether the row was new.
    (RETURNING says so on both; a DBAPI's rowcount does not, here, on psycopg.)"""
    dialect: Any = sqlite if connection.dialect.name == "sqlite" else postgresql
    first = table.primary_key.columns.values()[0]
    statement = dialect.insert(table).values(**row).on_conflict_do_nothing().returning(first)
    return connection.execute(statement).first() is not None
