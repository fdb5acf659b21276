"""The sms's owner records (highest sequence per address) and cancelled tasks.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "sms_records",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("signed", sa.Text, nullable=False),
        sa.Column("kept_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "task_cancels",
        sa.Column("task_id", sa.String(66), primary_key=True),
        sa.Column("requester", sa.String(42), nullable=False),
        sa.Column("cancelled_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_cancels")
    op.drop_table("sms_records")
