"""The turn queue: turns waiting behind a session's running turn.

Revision ID: session_0013
Revises: session_0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.types import JSONType, UTCDateTime

revision: str = "session_0013"
down_revision: str | None = "session_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_turn_queue",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("turn_context", JSONType, nullable=False),
        sa.Column("rolls_back", sa.String(64), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "session_id", "position", name="pk_session_turn_queue"
        ),
    )
    op.create_index(
        "ux_session_turn_queue_request",
        "session_turn_queue",
        ["tenant_id", "session_id", "request_id"],
        unique=True,
    )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("queued_turns", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("queued_turns")
    op.drop_index("ux_session_turn_queue_request", table_name="session_turn_queue")
    op.drop_table("session_turn_queue")
