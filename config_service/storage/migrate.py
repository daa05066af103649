"""Runs ConfigService's migrations."""

from __future__ import annotations

from shared.db import migrate

SCRIPT_LOCATION = "config_service:migrations"
VERSION_TABLE = "alembic_version_config"


def upgrade(url: str, revision: str = "head") -> None:
    """Migrates ConfigService's tables at url (blocking)."""
    migrate.upgrade(url, SCRIPT_LOCATION, VERSION_TABLE, revision)
