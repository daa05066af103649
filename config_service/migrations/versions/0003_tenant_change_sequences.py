"""Each tenant's own gap-free change sequence, so a watch reveals nothing of other tenants.

Revision ID: config_0003
Revises: config_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "config_0003"
down_revision: str | None = "config_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("config_changes", sa.Column("tenant_sequence", sa.BigInteger(), nullable=True))
    # Existing changes are numbered per tenant in the order they were made.
    op.execute(
        """
        UPDATE config_changes SET tenant_sequence = (
            SELECT COUNT(*) FROM config_changes AS earlier
            WHERE earlier.tenant_id = config_changes.tenant_id
              AND earlier.sequence <= config_changes.sequence
        )
        """
    )
    with op.batch_alter_table("config_changes") as batch:
        batch.alter_column("tenant_sequence", existing_type=sa.BigInteger(), nullable=False)
    op.create_index(
        "uq_config_changes_tenant_sequence",
        "config_changes",
        ["tenant_id", "tenant_sequence"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_config_changes_tenant_sequence", table_name="config_changes")
    with op.batch_alter_table("config_changes") as batch:
        batch.drop_column("tenant_sequence")
