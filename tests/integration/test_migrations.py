"""Each service's Alembic migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

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


def test_configs_made_before_packages_become_bundles_of_no_package(database_url: str) -> None:
    config_migrate.upgrade(database_url, "config_0003")
    engine = create_engine(sync_url(database_url))
    row = {
        "tenant_id": "t",
        "config_id": "c1",
        "name": "dev",
        "description": "",
        "tags": "{}",
        "revision": 1,
        "etag": "e",
        "yaml_content": "bundle:\n  name: dev\n",
        "summary": "{}",
        "bundle_name": "dev",
        "create_time": datetime(2026, 1, 1, tzinfo=UTC),
        "update_time": datetime(2026, 1, 1, tzinfo=UTC),
    }
    revision = {k: v for k, v in row.items() if k not in ("bundle_name", "update_time")}
    revision["revision_time"] = row["update_time"]
    try:
        with engine.begin() as connection:
            columns = ", ".join(row)
            connection.execute(
                text(f"INSERT INTO configs ({columns}) VALUES ({', '.join(':' + k for k in row)})"),
                row,
            )
            columns = ", ".join(revision)
            connection.execute(
                text(
                    f"INSERT INTO config_revisions ({columns}) "
                    f"VALUES ({', '.join(':' + k for k in revision)})"
                ),
                revision,
            )
        config_migrate.upgrade(database_url)
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT kind, namespace, path, source_uri, source_key FROM configs")
            ).one()
            kept = connection.execute(
                text("SELECT kind, namespace, path, source_uri FROM config_revisions")
            ).one()
        indexes = {index["name"] for index in inspect(engine).get_indexes("configs")}
    finally:
        engine.dispose()
    assert tuple(stored) == ("BUNDLE", "", "", "", "")
    assert tuple(kept) == ("BUNDLE", "", "", "")
    assert {"ix_configs_namespace", "ix_configs_source_path", "uq_configs_live_name"} <= indexes
