"""Child sessions (an agent run for a parent's turn) and session display names.

Revision ID: session_0006
Revises: session_0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0006"
down_revision: str | None = "session_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("parent_session_id", sa.String(64), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("agent", sa.String(256), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("display_name", sa.String(256), nullable=False, server_default="")
        )
    op.create_index("ix_sessions_parent", "sessions", ["tenant_id", "parent_session_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_parent", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("display_name")
        batch.drop_column("agent")
        batch.drop_column("parent_session_id")
