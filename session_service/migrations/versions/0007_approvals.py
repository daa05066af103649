"""Approvals: tool calls a paused turn waits on, and the decisions on them.

Revision ID: session_0007
Revises: session_0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.types import UTCDateTime

revision: str = "session_0007"
down_revision: str | None = "session_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_approvals",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("tool_call_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("arguments_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("expire_time", UTCDateTime(), nullable=True),
        sa.Column("decide_time", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "session_id", "turn_id", "tool_call_id", name="pk_session_approvals"
        ),
    )
    op.create_index("ix_session_approvals_expiry", "session_approvals", ["status", "expire_time"])


def downgrade() -> None:
    op.drop_index("ix_session_approvals_expiry", table_name="session_approvals")
    op.drop_table("session_approvals")
