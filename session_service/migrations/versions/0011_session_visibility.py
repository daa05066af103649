"""Session visibility: owner, team and who else sees a session.

Revision ID: session_0011
Revises: session_0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

revision: str = "session_0011"
down_revision: str | None = "session_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
