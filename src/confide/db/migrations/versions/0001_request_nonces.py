"""Replay protection for signed requests.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "request_nonces",
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("address", "nonce", name="uq_request_nonces_address_nonce"),
    )
    op.create_index("ix_request_nonces_seen_at", "request_nonces", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_request_nonces_seen_at", "request_nonces")
    op.drop_table("request_nonces")
