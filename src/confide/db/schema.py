"""Tables, as SQLAlchemy Core metadata (the migrations create them)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# One row per signed request received, so a replay is refused even across replicas and
# restarts: written in the same transaction as the request's effect, kept 900 s.
request_nonces = Table(
    "request_nonces",
    metadata,
    Column("address", String(42), nullable=False),
    Column("nonce", String(32), nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    UniqueConstraint("address", "nonce", name="uq_request_nonces_address_nonce"),
    Index("ix_request_nonces_seen_at", "seen_at"),
)

# The audit log: a gapless hash chain. UNIQUE(seq) and UNIQUE(prev_hash) make two writers
# that read the same head collide, so appends serialise and the chain never forks.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("detail", Text, nullable=False),  # canonical JSON, never a secret value
    UniqueConstraint("seq", name="uq_audit_log_seq"),
    UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),
)

# Attestation challenges: single use (consumed by DELETE), expiring.
attest_nonces = Table(
    "attest_nonces",
    metadata,
    Column("nonce", LargeBinary(32), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_attest_nonces_expires_at", "expires_at"),
)

# Simulation platform keys registered by wallets (sim evidence is accepted only from these).
sim_platforms = Table(
    "sim_platforms",
    metadata,
    Column("platform_key", LargeBinary(32), primary_key=True),
    Column("owner", String(42), nullable=False),
    Column("registered_at", BigInteger, nullable=False),
)

# Secret values, one row per version, sealed with envelope encryption (confide.crypto.envelope).
secrets = Table(
    "secrets",
    metadata,
    Column("row_id", String(32), primary_key=True),
    Column("owner", String(42), nullable=False),
    Column("kind", String(16), nullable=False),  # app | requester | dataset | result-key
    Column("name", String(64), nullable=False),
    Column("subject", String(128), nullable=False),  # app/dataset address, session@hash, or ""
    Column("version", BigInteger, nullable=False),
    Column("kek_id", String(32), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The owner's release policy (canonical JSON; "" = the default), bound into the value's
    # associated data so that editing it in the database makes the value undecryptable.
    Column("policy", Text, nullable=False, server_default=""),
    UniqueConstraint("owner", "kind", "subject", "name", "version", name="uq_secrets_version"),
)

# CAS sessions: every version kept; the session's secret values live in ``secrets``
# (kind "session"), never here. UNIQUE(owner, name, predecessor) makes a stale update lose.
sessions = Table(
    "sessions",
    metadata,
    Column("owner", String(42), nullable=False),
    Column("name", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("predecessor", String(64), nullable=False),  # "" for the first version
    Column("document", Text, nullable=False),  # canonical JSON, secret values replaced
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("owner", "name", "predecessor", name="uq_sessions_successor"),
    UniqueConstraint("owner", "name", "hash", name="uq_sessions_hash"),
)

# Granted attestations: which enclave keys the sms attested, for what, until when. A tag
# update is accepted only under an enclave key found here (and unexpired).
attestations = Table(
    "attestations",
    metadata,
    Column("jti", String(32), primary_key=True),
    Column("ed25519_public", String(64), nullable=False),
    Column("subject", String(256), nullable=False),  # owner/name@hash, or the task id
    Column("scope", String(160), nullable=False),  # owner/name of the session, or the task id
    Column("service", String(64), nullable=False),
    Column("worker", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_attestations_ed25519_public", "ed25519_public"),
)

# At most one release per task lease: the UNIQUE constraint is the guarantee.
task_releases = Table(
    "task_releases",
    metadata,
    Column("task_id", String(66), nullable=False),
    Column("lease_token", String(128), nullable=False),
    Column("jti", String(32), nullable=False),
    Column("worker", String(42), nullable=False),
    Column("released_at", BigInteger, nullable=False),
    UniqueConstraint("task_id", "lease_token", name="uq_task_releases_lease"),
)

# Each session volume's tag history. UNIQUE(owner, session, volume, previous_tag) makes the
# compare-and-swap hold across replicas: two updates from the same tag cannot both win.
volume_tags = Table(
    "volume_tags",
    metadata,
    Column("owner", String(42), nullable=False),
    Column("session", String(64), nullable=False),
    Column("volume", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("previous_tag", String(64), nullable=False),  # "" before the first tag
    Column("tag", String(64), nullable=False),
    Column("blob_digest", String(64), nullable=False),
    Column("reported_by", String(64), nullable=False),  # enclave Ed25519 key, or an updater
    Column("at", BigInteger, nullable=False),
    UniqueConstraint("owner", "session", "volume", "previous_tag", name="uq_volume_tags_cas"),
    UniqueConstraint("owner", "session", "volume", "seq", name="uq_volume_tags_seq"),
    UniqueConstraint("owner", "session", "volume", "tag", name="uq_volume_tags_tag"),
)

# What every replica of a service on this database must share, recorded by the first to
# start (confide.db.identity): for the sms, its deployment id and its token key's public
# half. A replica that differs refuses to start, naming which.
service_identity = Table(
    "service_identity",
    metadata,
    Column("service", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

# Owner-signed records (confide.records) the sms relies on: the highest sequence it has
# seen per address, pushed by owners (POST /v1/records) or fetched from the hub. One row
# per address, replaced by a higher sequence, so what a wallet can make the sms keep is
# bounded by the records its own key signs.
sms_records = Table(
    "sms_records",
    metadata,
    Column("address", String(42), primary_key=True),
    Column("kind", String(16), nullable=False),  # app | dataset | workerpool
    Column("owner", String(42), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("signed", Text, nullable=False),  # the SignedRecord's JSON, as verified
    Column("kept_at", BigInteger, nullable=False),
)

# Tasks their requester cancelled (POST /v1/task-cancels): no release after the cancel,
# whatever the hub says of the task.
task_cancels = Table(
    "task_cancels",
    metadata,
    Column("task_id", String(66), primary_key=True),
    Column("requester", String(42), nullable=False),
    Column("cancelled_at", BigInteger, nullable=False),
)
