"""CAS sessions, every version kept.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("predecessor", sa.String(64), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("owner", "name", "predecessor", name="uq_sessions_successor"),
        sa.UniqueConstraint("owner", "name", "hash", name="uq_sessions_hash"),
    )


def downgrade() -> None:
    op.drop_table("sessions")
