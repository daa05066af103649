"""Forks and rewinds: where a forked session came from.

Revision ID: session_0009
Revises: session_0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0009"
down_revision: str | None = "session_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("forked_from_session_id", sa.String(64), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("forked_from_sequence", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("forked_from_sequence")
        batch.drop_column("forked_from_session_id")
