"""Event retention on SQLite and PostgreSQL: the repository keeps the contract of the fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from session_service.storage import migrate
from session_service.storage.uow import SessionUnitOfWork
from shared.clock import utcnow
from shared.db.engine import create_engine
from shared.db.uow import session_factory
from tests.support.retention import check_compaction


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate.upgrade, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_retention_compacts_finished_turns_past_it_and_nothing_else(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)

    def factory(write: bool = False) -> SessionUnitOfWork:
        return SessionUnitOfWork(sessions, write=write)

    # Whole seconds, so times read back compare equal on both backends.
    await check_compaction(factory, utcnow().replace(microsecond=0))
