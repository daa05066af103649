"""WatchConfigs sequences per tenant: a watch reveals nothing of other tenants' activity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from tests.support.rpc import error_info, rpc_error
from tests.support.secured import Secured, auth, secured_stack


@pytest.fixture
async def secured(database_url: str, tmp_path: Path) -> AsyncIterator[Secured]:
    # A tiny retention, so pruning runs within the test.
    async with secured_stack(database_url, tmp_path, change_retention=4) as running:
        yield running


async def _create(secured: Secured, who: str, config_id: str) -> None:
    await secured.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=config_id,
            config=config_pb2.Config(name=config_id, yaml_content="bundle: {name: x}\n"),
        ),
        metadata=auth(who),
    )


async def _read(secured: Secured, who: str, after: int, n: int) -> list[tuple[int, str]]:
    call = secured.configs.WatchConfigs(
        config_service_pb2.WatchConfigsRequest(after_sequence=after), metadata=auth(who)
    )
    seen: list[tuple[int, str]] = []
    while len(seen) < n:
        change = await asyncio.wait_for(call.read(), 5)
        assert isinstance(change, config_pb2.ConfigChange)
        seen.append((change.sequence, change.config_id))
    call.cancel()
    return seen


async def test_each_tenant_counts_its_own_changes(secured: Secured) -> None:
    for index in range(5):
        await _create(secured, "a-writer", f"a-{index}")
    await _create(secured, "b-writer", "b-0")
    await _create(secured, "a-writer", "a-5")
    await _create(secured, "b-writer", "b-1")  # the 8th change: retention (4) prunes now

    # B's changes are its 1 and 2, whatever A did around them.
    assert await _read(secured, "b-writer", 1, 1) == [(2, "b-1")]
    error = await rpc_error(_read(secured, "b-writer", 3, 1))
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert error_info(error).metadata["latest_sequence"] == "2"

    # A's count is its own too; its oldest changes were pruned.
    assert await _read(secured, "a-writer", 4, 2) == [(5, "a-4"), (6, "a-5")]
    error = await rpc_error(_read(secured, "a-writer", 1, 1))
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE

    # The service identity follows every tenant in the global order.
    assert await _read(secured, "session-service", 5, 3) == [(6, "b-0"), (7, "a-5"), (8, "b-1")]


async def test_a_tenants_newest_change_outlives_pruning(secured: Secured) -> None:
    await _create(secured, "b-writer", "b-0")
    for index in range(10):
        await _create(secured, "a-writer", f"a-{index}")
    # B's only change is far older than the retained window, yet B can still resume after it.
    call = secured.configs.WatchConfigs(
        config_service_pb2.WatchConfigsRequest(after_sequence=1), metadata=auth("b-writer")
    )
    await call.initial_metadata()
    await _create(secured, "a-writer", "a-10")
    await _create(secured, "b-writer", "b-1")
    change = await asyncio.wait_for(call.read(), 5)
    call.cancel()
    assert isinstance(change, config_pb2.ConfigChange)
    assert (change.sequence, change.config_id) == (2, "b-1")
