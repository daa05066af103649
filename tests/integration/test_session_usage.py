"""The per-tenant session count behind the sessions quota, on SQLite and PostgreSQL.

`session_tenant_usage` is filled from existing sessions by its migration and then kept in
step by every insert and delete. `insert` returns the tenant's count with the new session, under
the count row's lock, so creates over a quota roll back, in turn across units.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from session_service.sessions.model import Session, Status
from session_service.storage import migrate
from session_service.storage.uow import SessionUnitOfWork
from shared.db.engine import create_engine, sync_url
from shared.db.uow import session_factory
from shared.errors import AlreadyExists

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate.upgrade, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # One factory for every unit, as the service has: on SQLite it queues the writers.
    return session_factory(engine)


def unit(sessions: async_sessionmaker[AsyncSession], write: bool = True) -> SessionUnitOfWork:
    return SessionUnitOfWork(sessions, write=write)


def new_session(session_id: str) -> Session:
    return Session(
        session_id=session_id,
        config_id="c1",
        config_revision=1,
        status=Status.CREATED,
        create_time=NOW,
        update_time=NOW,
        version=1,
    )


async def usage(sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> int | None:
    async with unit(sessions, write=False) as uow:
        held = await uow.session.scalar(
            text("SELECT sessions FROM session_tenant_usage WHERE tenant_id = :t"),
            {"t": tenant_id},
        )
        counted = await uow.sessions.count(tenant_id, [])
    if held is not None:
        assert held == counted, "the usage row must match the tenant's sessions"
    return None if held is None else int(held)


async def create(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, session_id: str, limit: int
) -> bool:
    """What CreateSession does with a quota: insert, and commit only within the limit."""
    async with unit(sessions) as uow:
        # Let every other task open its unit before this one writes.
        await asyncio.sleep(0)
        held = await uow.sessions.insert(tenant_id, new_session(session_id))
        if limit and held > limit:
            return False
        await uow.commit()
    return True


def test_the_migration_counts_existing_sessions(database_url: str) -> None:
    migrate.upgrade(database_url, "session_0004")
    engine = create_sync_engine(sync_url(database_url))
    rows = [("t1", "s1"), ("t1", "s2"), ("t1", "s3"), ("t2", "s1")]
    try:
        with engine.begin() as connection:
            for tenant_id, session_id in rows:
                connection.execute(
                    text(
                        "INSERT INTO sessions (tenant_id, session_id, config_id, config_revision,"
                        " status, error_message, message_count, last_sequence, active_turn_id,"
                        " tags, version, create_time, update_time) VALUES (:t, :s, 'c1', 1,"
                        " 'CREATED', '', 0, 0, '', '{}', 1, :now, :now)"
                    ),
                    {"t": tenant_id, "s": session_id, "now": NOW},
                )
        migrate.upgrade(database_url)
        with engine.connect() as connection:
            found = connection.execute(text("SELECT tenant_id, sessions FROM session_tenant_usage"))
            counted = {tenant_id: sessions for tenant_id, sessions in found}
    finally:
        engine.dispose()
    assert counted == {"t1": 3, "t2": 1}


async def test_the_migrated_count_is_what_inserts_count_from(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url, "session_0004")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for session_id in ("s1", "s2"):
                await connection.execute(
                    text(
                        "INSERT INTO sessions (tenant_id, session_id, config_id, config_revision,"
                        " status, error_message, message_count, last_sequence, active_turn_id,"
                        " tags, version, create_time, update_time) VALUES ('t1', :s, 'c1', 1,"
                        " 'CREATED', '', 0, 0, '', '{}', 1, :now, :now)"
                    ),
                    {"s": session_id, "now": NOW},
                )
        await asyncio.to_thread(migrate.upgrade, database_url)
        sessions = session_factory(engine)
        assert not await create(sessions, "t1", "s3", limit=2)
        assert await create(sessions, "t1", "s3", limit=3)
        assert await usage(sessions, "t1") == 3
    finally:
        await engine.dispose()


async def test_a_create_over_the_limit_rolls_back(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assert await create(sessions, "t1", "s1", limit=2)
    assert await create(sessions, "t1", "s2", limit=2)
    assert not await create(sessions, "t1", "s3", limit=2)
    assert await usage(sessions, "t1") == 2
    # Another tenant's count is its own; a raised limit lets the tenant grow again.
    assert await create(sessions, "t2", "s1", limit=1)
    assert await create(sessions, "t1", "s3", limit=3)
    assert await usage(sessions, "t1") == 3
    assert await usage(sessions, "t2") == 1


async def test_insert_reports_how_many_the_tenant_holds_with_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with unit(sessions) as uow:
        assert await uow.sessions.insert("t1", new_session("s1")) == 1
        assert await uow.sessions.insert("t1", new_session("s2")) == 2
        assert await uow.sessions.insert("t2", new_session("s1")) == 1
        await uow.commit()
    assert await usage(sessions, "t1") == 2
    async with unit(sessions) as uow:
        with pytest.raises(AlreadyExists):
            await uow.sessions.insert("t1", new_session("s1"))
    assert await usage(sessions, "t1") == 2


async def test_concurrent_creates_never_exceed_the_limit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    created = await asyncio.gather(
        *(create(sessions, "t1", f"s{number}", limit=5) for number in range(20))
    )
    assert sum(created) == 5
    assert await usage(sessions, "t1") == 5


async def test_delete_releases_a_slot(sessions: async_sessionmaker[AsyncSession]) -> None:
    assert await create(sessions, "t1", "s1", limit=2)
    assert await create(sessions, "t1", "s2", limit=2)
    assert not await create(sessions, "t1", "s3", limit=2)
    async with unit(sessions) as uow:
        await uow.sessions.delete("t1", "s1")
        # Deleting what is not there releases nothing.
        await uow.sessions.delete("t1", "s1")
        await uow.sessions.delete("t1", "missing")
        await uow.commit()
    assert await usage(sessions, "t1") == 1
    assert await create(sessions, "t1", "s3", limit=2)
    assert await usage(sessions, "t1") == 2


async def test_a_rolled_back_unit_changes_no_count(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assert await create(sessions, "t1", "s1", limit=2)
    async with unit(sessions) as uow:
        assert await uow.sessions.insert("t1", new_session("s2")) == 2
        # Left without commit: the insert and its count are rolled back.
    async with unit(sessions) as uow:
        await uow.sessions.delete("t1", "s1")
        # Nor does an uncommitted delete release anything.
    assert await usage(sessions, "t1") == 1

    async def fail_midway() -> None:
        async with unit(sessions) as uow:
            await uow.sessions.insert("t1", new_session("s2"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_midway()
    assert await usage(sessions, "t1") == 1
    # The slot is still there for the next creator.
    assert await create(sessions, "t1", "s2", limit=2)
    assert await usage(sessions, "t1") == 2
