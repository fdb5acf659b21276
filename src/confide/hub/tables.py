"""The hub's tables, on the one metadata of confide.db.schema (migrations 0008, 0010)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from confide.db.schema import metadata

# The kept owner-signed records: the highest sequence seen per address.
hub_records = Table(
    "hub_records",
    metadata,
    Column("address", String(42), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("owner", String(42), nullable=False),
    Column("name", String(64), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("signed", Text, nullable=False),  # the SignedRecord's JSON
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_hub_records_kind_owner", "kind", "owner"),
)

# Tasks. ``seq`` orders the queue (first queued, first claimed); ``wake_at`` is the
# earliest time the sweep must look at a live task (its lease's expiry, its deadline, its
# order's valid_until), NULL once final: the sweep reads only what is due, by index.
hub_tasks = Table(
    "hub_tasks",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("task_id", String(66), nullable=False, unique=True),
    Column("requester", String(42), nullable=False),
    Column("app", String(42), nullable=False),
    Column("workerpool", String(42), nullable=False),
    Column("dataset", String(42), nullable=True),
    Column("category", String(4), nullable=False),
    Column("status", String(16), nullable=False),
    Column("cause", String(32), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("deadline", BigInteger, nullable=True),
    Column("valid_until", BigInteger, nullable=False),
    Column("result_digest", String(64), nullable=True),
    Column("result_blob", String(64), nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("lease_worker", String(42), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("wake_at", BigInteger, nullable=True),
    Column("order_json", Text, nullable=False),  # the canonical order the requester signed
    Column("signature", String(140), nullable=False),
    Column("result", Text, nullable=True),  # the worker's result document (JSON; 0010)
    Column("times", Text, nullable=True),  # {STATUS: unix seconds} of each transition (0010)
    Index("ix_hub_tasks_claim", "workerpool", "status", "seq"),
    Index("ix_hub_tasks_requester_status", "requester", "status"),
    Index("ix_hub_tasks_wake_at", "wake_at"),
)
