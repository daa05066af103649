"""Per-tenant usage: how many sessions each tenant holds, counted once here and then kept in
step by every insert and delete, so the sessions quota needs no COUNT(*).

Revision ID: session_0005
Revises: session_0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0005"
down_revision: str | None = "session_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_tenant_usage",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_session_tenant_usage"),
    )
    op.execute(
        "INSERT INTO session_tenant_usage (tenant_id, sessions) "
        "SELECT tenant_id, count(*) FROM sessions GROUP BY tenant_id"
    )


def downgrade() -> None:
    op.drop_table("session_tenant_usage")
