"""WatchConfigs: ordered, gap-free, resumable, bounded by retention, ended on drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from config_service import app as config_app_module
from config_service.settings import ConfigServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared.app import ServiceApp
from tests.support.configs import create, take, watch
from tests.support.rpc import error_info, rpc_error

if TYPE_CHECKING:
    Stub = config_service_pb2_grpc.ConfigServiceAsyncStub


async def test_a_watch_from_now_sees_each_change_in_order(configs: Stub) -> None:
    call = watch(configs, 0)
    stream = aiter(call)
    # The first read proves the stream is open before changes are made.
    pending = asyncio.ensure_future(take(stream, 3))
    await asyncio.sleep(0.3)
    created = await create(configs, "dev")
    updated = await configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id=created.config_id, description="x")
        )
    )
    await configs.DeleteConfig(config_service_pb2.DeleteConfigRequest(config_id=created.config_id))
    changes = await asyncio.wait_for(pending, timeout=10)
    call.cancel()
    assert [c.type for c in changes] == [
        config_pb2.CHANGE_TYPE_CREATED,
        config_pb2.CHANGE_TYPE_UPDATED,
        config_pb2.CHANGE_TYPE_DELETED,
    ]
    assert [c.revision for c in changes] == [1, 2, 2]
    assert changes[1].etag == updated.etag
    assert {c.config_id for c in changes} == {created.config_id}
    assert {c.name for c in changes} == {"dev"}
    sequences = [c.sequence for c in changes]
    assert sequences == list(range(sequences[0], sequences[0] + 3))


async def test_a_watcher_that_reconnects_with_its_last_sequence_misses_nothing(
    configs: Stub,
) -> None:
    first = await create(configs, "c0")
    for n in range(1, 4):
        await create(configs, f"c{n}")
    call = watch(configs, 1)
    seen = await asyncio.wait_for(take(aiter(call), 2), timeout=10)
    call.cancel()
    last = seen[-1].sequence
    # Disconnected: more changes happen.
    for n in range(4, 9):
        await create(configs, f"c{n}")
    call = watch(configs, last)
    # c3 (made before the first watch, never read) and c4..c8 (made while away).
    resumed = await asyncio.wait_for(take(aiter(call), 6), timeout=10)
    # A live change after the catch-up arrives on the same stream.
    live = asyncio.ensure_future(take(aiter(call), 1))
    await create(configs, "c9")
    tail = await asyncio.wait_for(live, timeout=10)
    call.cancel()
    names = [c.name for c in [*seen, *resumed, *tail]]
    assert names == [f"c{n}" for n in range(1, 10)]
    sequences = [c.sequence for c in [*seen, *resumed, *tail]]
    assert sequences == sorted(set(sequences))
    assert first.revision == 1


async def test_after_sequence_past_the_end_is_out_of_range(configs: Stub) -> None:
    await create(configs, "dev")
    error = await rpc_error(take(aiter(watch(configs, 99)), 1))
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert error_info(error).reason == "SEQUENCE_IN_FUTURE"
    assert error_info(error).metadata["latest_sequence"] == "1"


@pytest.fixture
async def short_memory(database_url: str) -> AsyncIterator[ServiceApp]:
    settings = ConfigServiceSettings(
        database_url=database_url, config_service_listen="127.0.0.1:0", change_retention=5
    )
    app = await config_app_module.build(settings)
    await app.start()
    yield app
    await app.stop(0)


async def test_a_sequence_older_than_retention_is_out_of_range(short_memory: ServiceApp) -> None:
    async with grpc.aio.insecure_channel(short_memory.server.address) as channel:
        stub = config_service_pb2_grpc.ConfigServiceStub(channel)
        for n in range(12):
            await create(stub, f"c{n}")
        error = await rpc_error(take(aiter(watch(stub, 1)), 1))
        assert error.code() is grpc.StatusCode.OUT_OF_RANGE
        assert error_info(error).reason == "SEQUENCE_EXPIRED"
        oldest = int(error_info(error).metadata["oldest_sequence"])
        assert oldest > 2
        # Resuming right before the oldest retained change still works.
        replay = await asyncio.wait_for(take(aiter(watch(stub, oldest - 1)), 12 - oldest + 1), 10)
        assert [c.name for c in replay] == [f"c{n - 1}" for n in range(oldest, 13)]


async def test_draining_ends_watch_streams_with_the_sequence_to_resume_from(
    short_memory: ServiceApp,
) -> None:
    async with grpc.aio.insecure_channel(short_memory.server.address) as channel:
        stub = config_service_pb2_grpc.ConfigServiceStub(channel)
        await create(stub, "dev")
        call = watch(stub, 0)
        pending = asyncio.ensure_future(take(aiter(call), 1))
        await asyncio.sleep(0.3)
        await asyncio.wait_for(short_memory.stop(grace=5), timeout=10)
        error = await rpc_error(pending)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "SERVER_DRAINING"
    assert error_info(error).metadata["last_sequence"] == "1"
