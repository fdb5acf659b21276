"""The hub: each task's result document and the time of each status it went through.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    # JSON text: the worker's result document ({"blob", "logs_blob", "statement",
    # "signature", "token", "error"}), and {STATUS: unix seconds} of each transition.
    op.add_column("hub_tasks", sa.Column("result", sa.Text, nullable=True))
    op.add_column("hub_tasks", sa.Column("times", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hub_tasks") as batch:
        batch.drop_column("times")
        batch.drop_column("result")
