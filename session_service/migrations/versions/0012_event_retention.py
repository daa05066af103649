"""Event retention: how far each session's deltas were compacted.

Revision ID: session_0012
Revises: session_0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

revision: str = "session_0012"
down_revision: str | None = "session_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
