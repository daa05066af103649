"""ConfigService and SessionService in process on free ports, over one database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from session_service import app as session_app
from session_service.app import SessionParts
from session_service.prepare.modules import ModuleRegistry
from session_service.settings import SessionServiceSettings
from shared.app import ServiceApp
from shared.telemetry.setup import Telemetry


@dataclass
class Pair:
    """The two running services."""

    config_app: ServiceApp
    session_app: ServiceApp
    parts: SessionParts


@contextlib.asynccontextmanager
async def running_pair(
    database_url: str,
    *,
    telemetry: Telemetry | None = None,
    modules: ModuleRegistry | None = None,
    common: dict[str, Any] | None = None,
    session: dict[str, Any] | None = None,
) -> AsyncIterator[Pair]:
    """Both services, SessionService following ConfigService's changes; stopped on exit.

    common settings go to both services, session settings to SessionService only.
    """
    config = await config_app.build(
        ConfigServiceSettings(
            database_url=database_url, config_service_listen="127.0.0.1:0", **(common or {})
        ),
        telemetry,
    )
    await config.start()
    try:
        sessions, parts = await session_app.build_with_parts(
            SessionServiceSettings(
                database_url=database_url,
                session_service_listen="127.0.0.1:0",
                config_service_target=config.server.address,
                config_watch_retry_seconds=0.2,
                **(common or {}),
                **(session or {}),
            ),
            telemetry,
            modules,
        )
        await sessions.start()
        try:
            await asyncio.wait_for(parts.watcher.connected.wait(), timeout=10)
            yield Pair(config, sessions, parts)
        finally:
            # Telemetry providers shut down with the second service; stop that one last.
            await sessions.stop(0)
    finally:
        await config.stop(0)
