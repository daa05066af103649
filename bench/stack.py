"""Both services in process on free ports, for the benchmarks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from session_service import app as session_app
from session_service.app import SessionParts
from session_service.settings import SessionServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.app import ServiceApp


@dataclass
class Services:
    """The running pair."""

    configs: ServiceApp
    sessions: ServiceApp
    parts: SessionParts


@contextlib.asynccontextmanager
async def services(
    config_url: str,
    session_url: str,
    *,
    common: dict[str, Any] | None = None,
    session: dict[str, Any] | None = None,
) -> AsyncIterator[Services]:
    """Starts ConfigService, then SessionService pointed at it; stops both on exit.

    common settings go to both, session settings to SessionService only.
    """
    configs = await config_app.build(
        ConfigServiceSettings(
            database_url=config_url, config_service_listen="127.0.0.1:0", **(common or {})
        )
    )
    await configs.start()
    try:
        sessions, parts = await session_app.build_with_parts(
            SessionServiceSettings(
                database_url=session_url,
                session_service_listen="127.0.0.1:0",
                config_service_target=configs.server.address,
                **(common or {}),
                **(session or {}),
            )
        )
        await sessions.start()
        try:
            yield Services(configs, sessions, parts)
        finally:
            await sessions.stop(0)
    finally:
        await configs.stop(0)


async def started_sessions(
    running: Services, config_id: str, document: str, count: int
) -> list[str]:
    """Stores the config, then starts count sessions on it; their ids."""
    async with (
        grpc.aio.insecure_channel(running.configs.server.address) as config_channel,
        grpc.aio.insecure_channel(running.sessions.server.address) as session_channel,
    ):
        await config_service_pb2_grpc.ConfigServiceStub(config_channel).CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id=config_id,
                config=config_pb2.Config(name=config_id, yaml_content=document),
            )
        )
        stub = session_service_pb2_grpc.SessionServiceStub(session_channel)
        request = session_service_pb2.CreateSessionRequest(config_id=config_id, start=True)
        return [(await stub.CreateSession(request)).session_id for _ in range(count)]
