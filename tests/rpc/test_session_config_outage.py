"""SessionService with ConfigService down, and two SessionService replicas on one PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from tests.support.configs import create_config
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.pair import Stack
from tests.support.processes import deployment
from tests.support.rpc import error_info, rpc_error


async def test_cached_revisions_still_create_sessions_while_config_service_is_down(
    stack: Stack,
) -> None:
    await create_config(stack, "cached", "bundle:\n  name: cached\n")
    await create_config(stack, "never-prepared", "bundle:\n  name: never\n")
    warm = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="cached")
    )
    # The cache has seen both creations before ConfigService goes away.
    for _ in range(100):
        if stack.session_app.watcher.last_sequence >= 2:
            break
        await asyncio.sleep(0.05)
    await stack.config_app.stop(0)
    for _ in range(50):
        if not stack.session_app.watcher.healthy:
            break
        await asyncio.sleep(0.1)
    assert not stack.session_app.watcher.healthy

    latest = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="cached")
    )
    assert latest.config_revision == warm.config_revision
    pinned = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="cached", config_revision=1)
    )
    assert pinned.config_revision == 1
    error = await rpc_error(
        stack.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id="never-prepared")
        )
    )
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "CONFIG_SERVICE_UNAVAILABLE"


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_two_session_replicas_both_see_a_config_update(tmp_path: Path) -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        async with deployment(
            url, session_env={"TANDEM_CONFIG_WATCH_RETRY_SECONDS": "0.2"}
        ) as tandem:
            configs = tandem.configs
            replicas = tandem.sessions
            await configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="app",
                    config=config_pb2.Config(name="app", yaml_content="bundle:\n  name: a\n"),
                )
            )

            async def revision(stub: session_service_pb2_grpc.SessionServiceAsyncStub) -> int:
                created = await stub.CreateSession(
                    session_service_pb2.CreateSessionRequest(config_id="app")
                )
                return created.config_revision

            assert [await revision(r) for r in replicas] == [1, 1]
            await configs.UpdateConfig(
                config_service_pb2.UpdateConfigRequest(
                    config=config_pb2.Config(config_id="app", yaml_content="bundle:\n  name: b\n"),
                    update_mask=field_mask_pb2.FieldMask(paths=["yaml_content"]),
                )
            )
            for replica in replicas:
                for _ in range(50):
                    if await revision(replica) == 2:
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("a replica kept serving revision 1")
