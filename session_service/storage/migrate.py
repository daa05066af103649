"""Runs SessionService's migrations."""

from __future__ import annotations

from shared.db import migrate

SCRIPT_LOCATION = "session_service:migrations"
VERSION_TABLE = "alembic_version_session"


def upgrade(url: str, revision: str = "head") -> None:
    """Migrates SessionService's tables at url (blocking)."""
    migrate.upgrade(url, SCRIPT_LOCATION, VERSION_TABLE, revision)
