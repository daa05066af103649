"""The unit of work owns the transaction; repositories never commit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from config_service.storage import migrate
from config_service.storage.uow import ConfigUnitOfWork
from shared.db.engine import create_engine
from shared.db.uow import session_factory
from shared.errors import Aborted, InvalidArgument
from shared.idempotency import fingerprint


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def unit(engine: AsyncEngine) -> ConfigUnitOfWork:
    return ConfigUnitOfWork(session_factory(engine))


async def test_committed_work_is_visible_to_the_next_unit(engine: AsyncEngine) -> None:
    digest = fingerprint(b"request")
    async with unit(engine) as uow:
        await uow.idempotency.record("t1", "CreateConfig", "r1", digest, b"response")
        await uow.commit()
    async with unit(engine) as uow:
        stored = await uow.idempotency.find("t1", "CreateConfig", "r1", digest)
    assert stored is not None
    assert stored.response == b"response"


async def test_work_not_committed_is_rolled_back(engine: AsyncEngine) -> None:
    digest = fingerprint(b"request")
    async with unit(engine) as uow:
        await uow.idempotency.record("t1", "CreateConfig", "r1", digest, b"response")
    async with unit(engine) as uow:
        assert await uow.idempotency.find("t1", "CreateConfig", "r1", digest) is None


async def test_an_exception_rolls_the_unit_back(engine: AsyncEngine) -> None:
    digest = fingerprint(b"request")

    async def fail_midway() -> None:
        async with unit(engine) as uow:
            await uow.idempotency.record("t1", "CreateConfig", "r1", digest, b"response")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_midway()
    async with unit(engine) as uow:
        assert await uow.idempotency.find("t1", "CreateConfig", "r1", digest) is None


async def test_request_ids_are_scoped_by_tenant(engine: AsyncEngine) -> None:
    digest = fingerprint(b"request")
    async with unit(engine) as uow:
        await uow.idempotency.record("t1", "CreateConfig", "r1", digest, b"for t1")
        await uow.commit()
    async with unit(engine) as uow:
        assert await uow.idempotency.find("t2", "CreateConfig", "r1", digest) is None


async def test_a_reused_request_id_with_another_request_is_refused(engine: AsyncEngine) -> None:
    async with unit(engine) as uow:
        await uow.idempotency.record("t1", "CreateConfig", "r1", fingerprint(b"a"), b"x")
        await uow.commit()
    async with unit(engine) as uow:
        with pytest.raises(InvalidArgument) as caught:
            await uow.idempotency.find("t1", "CreateConfig", "r1", fingerprint(b"b"))
    assert caught.value.reason == "REQUEST_ID_REUSED"


async def test_a_concurrent_duplicate_is_aborted_and_the_first_survives(
    engine: AsyncEngine,
) -> None:
    digest = fingerprint(b"request")
    async with unit(engine) as first:
        await first.idempotency.record("t1", "CreateConfig", "r1", digest, b"first")
        await first.commit()
    async with unit(engine) as second:
        with pytest.raises(Aborted):
            await second.idempotency.record("t1", "CreateConfig", "r1", digest, b"second")
    async with unit(engine) as uow:
        stored = await uow.idempotency.find("t1", "CreateConfig", "r1", digest)
    assert stored is not None
    assert stored.response == b"first"


async def test_a_unit_cannot_be_used_outside_its_block(engine: AsyncEngine) -> None:
    uow = unit(engine)
    with pytest.raises(RuntimeError, match="outside"):
        _ = uow.session
