"""Bundle packages: each config's kind, package namespace, path and source.

Existing configs were created on their own: they become BUNDLE configs of no package.
Revisions carry the same fields, so a revision a session is pinned to still says what it was.

Revision ID: config_0004
Revises: config_0003
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "config_0004"
down_revision: str | None = "config_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PACKAGE_COLUMNS = ("kind", "namespace", "path", "source_uri")


def _package_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("kind", sa.String(16), nullable=False, server_default="BUNDLE"),
        sa.Column("namespace", sa.String(128), nullable=False, server_default=""),
        sa.Column("path", sa.String(256), nullable=False, server_default=""),
        sa.Column("source_uri", sa.String(1024), nullable=False, server_default=""),
    ]


def upgrade() -> None:
    for column in _package_columns():
        op.add_column("configs", column)
    # The source as references match it (`@REF` and fragment dropped), for lookups by
    # `git+https://…#subdirectory=PATH`.
    op.add_column(
        "configs", sa.Column("source_key", sa.String(1024), nullable=False, server_default="")
    )
    for column in _package_columns():
        op.add_column("config_revisions", column)
    op.create_index("ix_configs_namespace", "configs", ["tenant_id", "namespace"])
    op.create_index("ix_configs_source_path", "configs", ["tenant_id", "source_key", "path"])


def downgrade() -> None:
    op.drop_index("ix_configs_source_path", table_name="configs")
    op.drop_index("ix_configs_namespace", table_name="configs")
    with op.batch_alter_table("config_revisions") as batch:
        for name in _PACKAGE_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("configs") as batch:
        batch.drop_column("source_key")
        for name in _PACKAGE_COLUMNS:
            batch.drop_column(name)
