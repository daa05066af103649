"""Configs, their immutable revisions, and the change log.

Revision ID: config_0002
Revises: config_0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.types import JSONType, UTCDateTime

revision: str = "config_0002"
down_revision: str | None = "config_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "configs",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("config_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", JSONType, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("yaml_content", sa.Text(), nullable=False),
        sa.Column("summary", JSONType, nullable=False),
        sa.Column("bundle_name", sa.String(256), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("update_time", UTCDateTime(), nullable=False),
        sa.Column("delete_time", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "config_id", name="pk_configs"),
    )
    op.create_index(
        "uq_configs_live_name",
        "configs",
        ["tenant_id", "name"],
        unique=True,
        postgresql_where=sa.text("delete_time IS NULL"),
        sqlite_where=sa.text("delete_time IS NULL"),
    )
    op.create_index("ix_configs_bundle_name", "configs", ["tenant_id", "bundle_name"])
    op.create_table(
        "config_revisions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("config_id", sa.String(64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", JSONType, nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("yaml_content", sa.Text(), nullable=False),
        sa.Column("summary", JSONType, nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("revision_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "config_id", "revision", name="pk_config_revisions"),
    )
    op.create_table(
        "config_changes",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("config_id", sa.String(64), nullable=False),
        sa.Column("change_type", sa.String(16), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("change_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name="pk_config_changes"),
    )
    op.create_index(
        "ix_config_changes_tenant_sequence", "config_changes", ["tenant_id", "sequence"]
    )


def downgrade() -> None:
    op.drop_table("config_changes")
    op.drop_table("config_revisions")
    op.drop_index("ix_configs_bundle_name", table_name="configs")
    op.drop_index("uq_configs_live_name", table_name="configs")
    op.drop_table("configs")
