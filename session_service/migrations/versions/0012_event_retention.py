"""Event retention: how far each session's deltas were compacted.

Revision ID: session_0012
Revises: session_0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0012"
down_revision: str | None = "session_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        # Every event up to here is what compaction left: no deltas of the turns it covers.
        batch.add_column(
            sa.Column("compacted_through", sa.BigInteger(), nullable=False, server_default="0")
        )
    # The compaction sweep looks for the oldest finished turns.
    op.create_index("ix_session_turns_end_time", "session_turns", ["end_time"])


def downgrade() -> None:
    op.drop_index("ix_session_turns_end_time", table_name="session_turns")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("compacted_through")
