"""Audit log, attestation nonces, simulation platforms.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.UniqueConstraint("seq", name="uq_audit_log_seq"),
        sa.UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),
    )
    op.create_table(
        "attest_nonces",
        sa.Column("nonce", sa.LargeBinary(32), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "sim_platforms",
        sa.Column("platform_key", sa.LargeBinary(32), primary_key=True),
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("registered_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sim_platforms")
    op.drop_table("attest_nonces")
    op.drop_table("audit_log")
