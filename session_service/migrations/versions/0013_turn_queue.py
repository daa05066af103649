"""The turn queue: turns waiting behind a session's running turn.

Revision ID: session_0013
Revises: session_0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

revision: str = "session_0013"
down_revision: str | None = "session_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
