"""Alembic, driven from code so that each service migrates its own tables on its own database."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import MetaData, create_engine, pool, text

from shared.db.engine import sync_url

# Any fixed 63-bit number; it names the lock migrations hold on PostgreSQL.
_MIGRATION_LOCK = 0x7A6D_0A1E_0001


def alembic_config(url: str, script_location: str, version_table: str) -> Config:
    """An Alembic config for one service's migrations against url."""
    config = Config()
    config.set_main_option("script_location", script_location)
    # Rendered URLs hide the password; pass the real one beside the config instead.
    config.attributes["url"] = sync_url(url)
    config.attributes["version_table"] = version_table
    return config


def upgrade(url: str, script_location: str, version_table: str, revision: str = "head") -> None:
    """Brings the database at url up to revision (blocking; call it in a thread from async code)."""
    command.upgrade(alembic_config(url, script_location, version_table), revision)


def run_env(context: EnvironmentContext, metadata: MetaData) -> None:
    """The body of every service's `env.py`."""
    config = context.config
    url = config.attributes["url"]
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": config.attributes["version_table"],
        # SQLite can only ALTER through table copies.
        "render_as_batch": url.get_backend_name() == "sqlite",
        "compare_type": True,
    }
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            if url.get_backend_name() == "postgresql":
                # Replicas starting together would race to create the same tables; the
                # first migrates while the rest wait, then find nothing left to do.
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
                connection.commit()
            context.configure(connection=connection, **options)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
