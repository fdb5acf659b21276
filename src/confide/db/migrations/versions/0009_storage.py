"""Storage: blobs and per-wallet usage.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "storage_blobs",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "storage_uploaders",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("uploaded_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("digest", "address", name="pk_storage_uploaders"),
    )
    op.create_index("ix_storage_uploaders_address", "storage_uploaders", ["address"])
    op.create_table(
        "storage_usage",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("used_bytes", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("storage_usage")
    op.drop_index("ix_storage_uploaders_address", "storage_uploaders")
    op.drop_table("storage_uploaders")
    op.drop_table("storage_blobs")
