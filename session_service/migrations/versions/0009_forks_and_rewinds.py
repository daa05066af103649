"""Forks and rewinds: where a forked session came from.

Revision ID: session_0009
Revises: session_0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

revision: str = "session_0009"
down_revision: str | None = "session_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
