"""Config visibility: owner, team and who else sees a config.

Revision ID: config_0005
Revises: config_0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

revision: str = "config_0005"
down_revision: str | None = "config_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
