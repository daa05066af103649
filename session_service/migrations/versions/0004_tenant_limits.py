"""Per-tenant limits: rate buckets, and an index to count a tenant's running turns.

Revision ID: session_0004
Revises: session_0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0004"
down_revision: str | None = "session_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_rate_buckets",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refreshed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_session_rate_buckets"),
    )
    op.create_index("ix_session_turns_status", "session_turns", ["tenant_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_session_turns_status", table_name="session_turns")
    op.drop_table("session_rate_buckets")
