"""Turns and the per-session event log.

Revision ID: session_0003
Revises: session_0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.types import JSONType, UTCDateTime

revision: str = "session_0003"
down_revision: str | None = "session_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_turns",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("runner", sa.String(128), nullable=False),
        sa.Column("lease_expires", UTCDateTime(), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("end_time", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", "turn_id", name="pk_session_turns"),
    )
    op.create_index(
        "ux_session_turns_request",
        "session_turns",
        ["tenant_id", "session_id", "request_id"],
        unique=True,
    )
    op.create_table(
        "session_events",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("event_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", "sequence", name="pk_session_events"),
    )


def downgrade() -> None:
    op.drop_table("session_events")
    op.drop_index("ux_session_turns_request", table_name="session_turns")
    op.drop_table("session_turns")
