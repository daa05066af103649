"""The time Tandem stamps on what it stores: aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, in UTC, as it is stored."""
    return datetime.now(UTC)
