"""Session lifetimes: idle ttl, retention after the end, and the deadlines they give.

Revision ID: session_0008
Revises: session_0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.types import UTCDateTime

revision: str = "session_0008"
down_revision: str | None = "session_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("ttl_seconds", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("delete_after_seconds", sa.Float(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("last_activity_time", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("idle_expire_time", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("delete_time", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("completion_reason", sa.String(32), nullable=False, server_default="")
        )
    op.create_index("ix_sessions_idle_expire", "sessions", ["idle_expire_time"])
    op.create_index("ix_sessions_delete_time", "sessions", ["delete_time"])


def downgrade() -> None:
    op.drop_index("ix_sessions_delete_time", table_name="sessions")
    op.drop_index("ix_sessions_idle_expire", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        for column in (
            "completion_reason",
            "delete_time",
            "idle_expire_time",
            "last_activity_time",
            "delete_after_seconds",
            "ttl_seconds",
        ):
            batch.drop_column(column)
