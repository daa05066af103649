"""Per-session overrides: the bundle fragment a session composes last.

Revision ID: session_0010
Revises: session_0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

revision: str = "session_0010"
down_revision: str | None = "session_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
