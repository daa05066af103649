"""SessionService finds a restarted ConfigService again after a long outage.

How soon is the channel's capped reconnect backoff, checked in tests/unit/test_channel_config.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import grpc
import pytest

from session_service import app as session_app
from session_service.settings import SessionServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from tests.support.processes import service_process


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.timeout(120)
async def test_a_killed_config_service_is_found_again(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    env = {
        "TANDEM_DATABASE_URL": f"sqlite:///{tmp_path / 'config.db'}",
        "TANDEM_CONFIG_SERVICE_LISTEN": address,
    }
    sessions_app = await session_app.build(
        SessionServiceSettings(
            database_url=f"sqlite:///{tmp_path / 'session.db'}",
            session_service_listen="127.0.0.1:0",
            config_service_target=address,
            config_watch_retry_seconds=0.2,
        )
    )
    await sessions_app.start()
    try:
        async with grpc.aio.insecure_channel(sessions_app.server.address) as channel:
            sessions = session_service_pb2_grpc.SessionServiceStub(channel)

            async def create(config_id: str) -> str:
                created = await sessions.CreateSession(
                    session_service_pb2.CreateSessionRequest(config_id=config_id), timeout=5
                )
                return str(created.session_id)

            codes: set[grpc.StatusCode] = set()

            async def once_found(config_id: str) -> str:
                """Creates, retrying while SessionService's channel has not found ConfigService."""
                while True:
                    try:
                        return await create(config_id)
                    except grpc.aio.AioRpcError as error:
                        codes.add(error.code())
                        await asyncio.sleep(0.05)

            async with service_process(["-m", "config_service"], env) as first:
                async with grpc.aio.insecure_channel(address) as config_channel:
                    configs = config_service_pb2_grpc.ConfigServiceStub(config_channel)
                    for name in ("before", "after"):
                        await configs.CreateConfig(
                            config_service_pb2.CreateConfigRequest(
                                config_id=name,
                                config=config_pb2.Config(
                                    name=name, yaml_content="bundle: {name: x}\n"
                                ),
                            )
                        )
                # SessionService's channel met no server at first and may still be backing
                # off: the timeout only fails one that never finds it.
                assert await asyncio.wait_for(once_found("before"), 30)
                first.process.kill()
                await first.process.wait()
            # Down long enough that gRPC's default backoff would have grown past 4 s.
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await create("after")
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(1)
            async with service_process(["-m", "config_service"], env):
                # The timeout only fails a SessionService that never finds ConfigService again.
                assert await asyncio.wait_for(once_found("after"), 30)
                assert codes <= {grpc.StatusCode.UNAVAILABLE}
    finally:
        await sessions_app.stop(0)
