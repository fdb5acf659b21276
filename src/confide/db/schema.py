"""Tables, as SQLAlchemy Core metadata (the migrations create them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, UniqueConstraint

metadata = MetaData()

# One row per signed request received, so a replay is refused even across replicas and
# restarts: written in the same transaction as the request's effect, kept >= 600 s.
request_nonces = Table(
    "request_nonces",
    metadata,
    Column("address", String(42), nullable=False),
    Column("nonce", String(32), nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    UniqueConstraint("address", "nonce", name="uq_request_nonces_address_nonce"),
    Index("ix_request_nonces_seen_at", "seen_at"),
)
