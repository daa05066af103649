"""Two ConfigService replicas on one PostgreSQL: a change via one reaches a watcher on the other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from tests.support.configs import create
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.processes import service_process


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_a_change_through_one_replica_reaches_a_watcher_on_another(
    tmp_path: Path,
) -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        env = {
            "TANDEM_DATABASE_URL": url,
            "TANDEM_CONFIG_SERVICE_LISTEN": "127.0.0.1:0",
            # Long enough that only LISTEN/NOTIFY can explain a prompt delivery.
            "TANDEM_WATCH_POLL_SECONDS": "30",
        }
        async with (
            service_process(["-m", "config_service"], env) as replica_a,
            service_process(["-m", "config_service"], env) as replica_b,
            grpc.aio.insecure_channel(replica_a.address) as channel_a,
            grpc.aio.insecure_channel(replica_b.address) as channel_b,
        ):
            writer = config_service_pb2_grpc.ConfigServiceStub(channel_a)
            watcher = config_service_pb2_grpc.ConfigServiceStub(channel_b)
            first = await create(writer, "before-watch")
            call = watcher.WatchConfigs(config_service_pb2.WatchConfigsRequest(after_sequence=1))
            stream = aiter(call)

            async def next_change() -> config_pb2.ConfigChange:
                return await asyncio.wait_for(anext(stream), timeout=5)

            second = await create(writer, "through-a")
            change = await next_change()
            assert (change.config_id, change.type) == (
                second.config_id,
                config_pb2.CHANGE_TYPE_CREATED,
            )
            updated = await writer.UpdateConfig(
                config_service_pb2.UpdateConfigRequest(
                    config=config_pb2.Config(config_id=first.config_id, description="x")
                )
            )
            change = await next_change()
            assert (change.config_id, change.revision, change.etag) == (
                first.config_id,
                2,
                updated.etag,
            )
            call.cancel()
