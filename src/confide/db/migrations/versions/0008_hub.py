"""The hub: records, tasks, leases.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "hub_records",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("signed", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_hub_records_kind_owner", "hub_records", ["kind", "owner"])
    op.create_table(
        "hub_tasks",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task_id", sa.String(66), nullable=False, unique=True),
        sa.Column("requester", sa.String(42), nullable=False),
        sa.Column("app", sa.String(42), nullable=False),
        sa.Column("workerpool", sa.String(42), nullable=False),
        sa.Column("dataset", sa.String(42), nullable=True),
        sa.Column("category", sa.String(4), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("deadline", sa.BigInteger, nullable=True),
        sa.Column("valid_until", sa.BigInteger, nullable=False),
        sa.Column("result_digest", sa.String(64), nullable=True),
        sa.Column("result_blob", sa.String(64), nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("lease_worker", sa.String(42), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger, nullable=True),
        sa.Column("wake_at", sa.BigInteger, nullable=True),
        sa.Column("order_json", sa.Text, nullable=False),
        sa.Column("signature", sa.String(140), nullable=False),
    )
    op.create_index("ix_hub_tasks_claim", "hub_tasks", ["workerpool", "status", "seq"])
    op.create_index("ix_hub_tasks_requester_status", "hub_tasks", ["requester", "status"])
    op.create_index("ix_hub_tasks_wake_at", "hub_tasks", ["wake_at"])


def downgrade() -> None:
    op.drop_index("ix_hub_tasks_wake_at", "hub_tasks")
    op.drop_index("ix_hub_tasks_requester_status", "hub_tasks")
    op.drop_index("ix_hub_tasks_claim", "hub_tasks")
    op.drop_table("hub_tasks")
    op.drop_index("ix_hub_records_kind_owner", "hub_records")
    op.drop_table("hub_records")
