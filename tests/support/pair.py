"""ConfigService and SessionService in process on free ports: the one harness for both.

The `stack` fixture, the secured and traced stacks, the replica tests and the benchmarks all
start the services through here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from session_service import app as session_app
from session_service.app import SessionServiceApp
from session_service.prepare.modules import ModuleRegistry
from session_service.settings import SessionServiceSettings
from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared._generated.tandem.session.v1 import session_service_pb2_grpc
from shared.app import ServiceApp
from shared.telemetry.setup import Telemetry


@dataclass
class Stack:
    """Both services running, with a stub to each."""

    config_app: ServiceApp
    session_app: SessionServiceApp
    configs: config_service_pb2_grpc.ConfigServiceAsyncStub
    sessions: session_service_pb2_grpc.SessionServiceAsyncStub


@contextlib.asynccontextmanager
async def running_config_service(
    database_url: str, telemetry: Telemetry | None = None, **settings: Any
) -> AsyncIterator[ServiceApp]:
    """ConfigService on a free port; stopped on exit."""
    app = await config_app.build(
        ConfigServiceSettings(
            **{"database_url": database_url, "config_service_listen": "127.0.0.1:0", **settings}
        ),
        telemetry,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)


@contextlib.asynccontextmanager
async def running_session_service(
    database_url: str,
    config_address: str,
    *,
    telemetry: Telemetry | None = None,
    modules: ModuleRegistry | None = None,
    **settings: Any,
) -> AsyncIterator[SessionServiceApp]:
    """A SessionService (replica) on a free port, following the ConfigService at config_address.

    It is yielded once its watch of ConfigService's changes is connected; stopped on exit.
    """
    app = await session_app.build(
        SessionServiceSettings(
            **{
                "database_url": database_url,
                "session_service_listen": "127.0.0.1:0",
                "config_service_target": config_address,
                "config_watch_retry_seconds": 0.2,
                **settings,
            }
        ),
        telemetry,
        modules,
    )
    await app.start()
    try:
        await asyncio.wait_for(app.watcher.connected.wait(), timeout=10)
        yield app
    finally:
        await app.stop(0)


@contextlib.asynccontextmanager
async def running_pair(
    database_url: str,
    *,
    session_database_url: str | None = None,
    telemetry: Telemetry | None = None,
    modules: ModuleRegistry | None = None,
    common: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    session: dict[str, Any] | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> AsyncIterator[Stack]:
    """Both services, SessionService following ConfigService's changes; stopped on exit.

    Both use database_url unless SessionService is given its own session_database_url.
    common settings go to both services, config settings to ConfigService only and session
    settings to SessionService only. The stubs' channels carry the given client interceptors.
    """
    async with (
        running_config_service(
            database_url, telemetry, **(common or {}), **(config or {})
        ) as configs,
        running_session_service(
            session_database_url or database_url,
            configs.server.address,
            telemetry=telemetry,
            modules=modules,
            **(common or {}),
            **(session or {}),
        ) as sessions,
        grpc.aio.insecure_channel(configs.server.address, interceptors=interceptors) as c,
        grpc.aio.insecure_channel(sessions.server.address, interceptors=interceptors) as s,
    ):
        yield Stack(
            configs,
            sessions,
            config_service_pb2_grpc.ConfigServiceStub(c),
            session_service_pb2_grpc.SessionServiceStub(s),
        )
