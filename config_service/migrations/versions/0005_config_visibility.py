"""Config visibility: owner, team and who else sees a config.

Existing configs have no recorded owner and stay visible to their whole tenant (ORG), so
nothing anyone sees today disappears. Revisions carry the same fields, as they carry the
config's other columns.

Revision ID: config_0005
Revises: config_0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "config_0005"
down_revision: str | None = "config_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("owner", "visibility", "team")


def _columns() -> list[sa.Column[str]]:
    return [
        sa.Column("owner", sa.Text(), nullable=False, server_default=""),
        sa.Column("visibility", sa.String(16), nullable=False, server_default="ORG"),
        sa.Column("team", sa.String(128), nullable=False, server_default=""),
    ]


def upgrade() -> None:
    for table in ("configs", "config_revisions"):
        with op.batch_alter_table(table) as batch:
            for column in _columns():
                batch.add_column(column)
    op.create_index("ix_configs_owner", "configs", ["tenant_id", "owner"])


def downgrade() -> None:
    op.drop_index("ix_configs_owner", table_name="configs")
    for table in ("config_revisions", "configs"):
        with op.batch_alter_table(table) as batch:
            for name in _COLUMNS:
                batch.drop_column(name)
