"""Release policies on secrets; granted attestations, task releases, volume tags.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.add_column(sa.Column("policy", sa.Text, nullable=False, server_default=""))
    op.create_index("ix_attest_nonces_expires_at", "attest_nonces", ["expires_at"])
    op.create_table(
        "attestations",
        sa.Column("jti", sa.String(32), primary_key=True),
        sa.Column("ed25519_public", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("scope", sa.String(160), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_attestations_ed25519_public", "attestations", ["ed25519_public"])
    op.create_table(
        "task_releases",
        sa.Column("task_id", sa.String(66), nullable=False),
        sa.Column("lease_token", sa.String(128), nullable=False),
        sa.Column("jti", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(42), nullable=False),
        sa.Column("released_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("task_id", "lease_token", name="uq_task_releases_lease"),
    )
    op.create_table(
        "volume_tags",
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("volume", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("previous_tag", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("blob_digest", sa.String(64), nullable=False),
        sa.Column("reported_by", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint(
            "owner", "session", "volume", "previous_tag", name="uq_volume_tags_cas"
        ),
        sa.UniqueConstraint("owner", "session", "volume", "seq", name="uq_volume_tags_seq"),
        sa.UniqueConstraint("owner", "session", "volume", "tag", name="uq_volume_tags_tag"),
    )


def downgrade() -> None:
    op.drop_table("volume_tags")
    op.drop_table("task_releases")
    op.drop_index("ix_attestations_ed25519_public", "attestations")
    op.drop_table("attestations")
    op.drop_index("ix_attest_nonces_expires_at", "attest_nonces")
    with op.batch_alter_table("secrets") as batch:
        batch.drop_column("policy")
