"""The storage's tables (on :data:`confide.db.schema.metadata`; migration 0009).

The bytes are the backend's; the database knows each blob's size, who uploaded it (an
uploader may read it and pays for it once in his quota) and what each wallet uses.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, PrimaryKeyConstraint, String, Table

from confide.db.schema import metadata

# One row per blob whose bytes were received whole and checked against the digest.
storage_blobs = Table(
    "storage_blobs",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Who uploaded a blob: each may read it, and it counts once in each one's usage.
storage_uploaders = Table(
    "storage_uploaders",
    metadata,
    Column("digest", String(64), nullable=False),
    Column("address", String(42), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("uploaded_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("digest", "address", name="pk_storage_uploaders"),
    Index("ix_storage_uploaders_address", "address"),
)

# Bytes counted against each wallet's quota (the sum of its uploaders rows' sizes), kept
# as one row so that the quota check and the increment are one conditional UPDATE.
storage_usage = Table(
    "storage_usage",
    metadata,
    Column("address", String(42), primary_key=True),
    Column("used_bytes", BigInteger, nullable=False),
)
