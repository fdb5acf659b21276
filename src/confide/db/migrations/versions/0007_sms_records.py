"""The sms's owner records (highest sequence per address) and cancelled tasks.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
