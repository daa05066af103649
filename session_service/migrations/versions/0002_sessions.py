"""Sessions and their transcripts.

Revision ID: session_0002
Revises: session_0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.types import JSONType, UTCDateTime

revision: str = "session_0002"
down_revision: str | None = "session_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("config_id", sa.String(64), nullable=False),
        sa.Column("config_revision", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("active_turn_id", sa.String(64), nullable=False),
        sa.Column("tags", JSONType, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("update_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_config", "sessions", ["tenant_id", "config_id"])
    op.create_index("ix_sessions_status", "sessions", ["tenant_id", "status"])
    op.create_table(
        "session_messages",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tool_calls", JSONType, nullable=False),
        sa.Column("tool_call_id", sa.String(128), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", "sequence", name="pk_session_messages"),
    )


def downgrade() -> None:
    op.drop_table("session_messages")
    op.drop_index("ix_sessions_status", table_name="sessions")
    op.drop_index("ix_sessions_config", table_name="sessions")
    op.drop_table("sessions")
