"""Session visibility: owner, team and who else sees a session.

Existing sessions have no recorded owner and stay visible to their whole tenant (ORG), so
nothing anyone sees today disappears; new sessions default to PRIVATE.

Revision ID: session_0011
Revises: session_0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0011"
down_revision: str | None = "session_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("owner", sa.Text(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("visibility", sa.String(16), nullable=False, server_default="ORG")
        )
        batch.add_column(sa.Column("team", sa.String(128), nullable=False, server_default=""))
    op.create_index("ix_sessions_owner", "sessions", ["tenant_id", "owner"])


def downgrade() -> None:
    op.drop_index("ix_sessions_owner", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        for column in ("team", "visibility", "owner"):
            batch.drop_column(column)
