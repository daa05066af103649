"""Each service's Alembic migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from config_service.storage import migrate as config_migrate
from session_service.storage import migrate as session_migrate
from shared.db import migrate
from shared.db.engine import sync_url


def _inspect(url: str) -> tuple[set[str], dict[str, set[str]]]:
    engine = create_engine(sync_url(url))
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in tables}
        return tables, columns
    finally:
        engine.dispose()


def test_config_service_migrates_an_empty_database(database_url: str) -> None:
    config_migrate.upgrade(database_url)
    tables, columns = _inspect(database_url)
    assert {"alembic_version_config", "config_idempotency_keys"} <= tables
    assert "tenant_id" in columns["config_idempotency_keys"]


def test_both_services_can_share_one_database(database_url: str) -> None:
    # Each keeps its own version table and table names, so neither sees the other's history.
    config_migrate.upgrade(database_url)
    session_migrate.upgrade(database_url)
    tables, _ = _inspect(database_url)
    assert {
        "alembic_version_config",
        "alembic_version_session",
        "config_idempotency_keys",
        "session_idempotency_keys",
    } <= tables


def test_every_table_carries_tenant_id(database_url: str) -> None:
    config_migrate.upgrade(database_url)
    session_migrate.upgrade(database_url)
    _, columns = _inspect(database_url)
    for table, names in columns.items():
        if table.startswith("alembic_version"):
            continue
        assert "tenant_id" in names, table


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    session_migrate.upgrade(database_url)
    before = _inspect(database_url)
    session_migrate.upgrade(database_url)
    assert _inspect(database_url) == before


@pytest.mark.parametrize(
    ("script", "version_table"),
    [
        (config_migrate.SCRIPT_LOCATION, config_migrate.VERSION_TABLE),
        (session_migrate.SCRIPT_LOCATION, session_migrate.VERSION_TABLE),
    ],
)
def test_migrations_go_down_and_up_again(
    database_url: str, script: str, version_table: str
) -> None:
    migrate.upgrade(database_url, script, version_table)
    command.downgrade(migrate.alembic_config(database_url, script, version_table), "base")
    tables, _ = _inspect(database_url)
    assert tables == {version_table}
    migrate.upgrade(database_url, script, version_table)
    tables, _ = _inspect(database_url)
    assert len(tables) > 1
