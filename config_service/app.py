"""Composition root: builds ConfigService from its settings."""

from __future__ import annotations

import asyncio

from config_service.servicer import SERVICE_NAME, ConfigServicer
from config_service.settings import ConfigServiceSettings
from config_service.storage import migrate
from config_service.storage.uow import ConfigUnitOfWork
from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared.app import ServiceApp
from shared.db.engine import create_engine
from shared.db.uow import session_factory
from shared.rpc.server import GrpcServer, ServiceBinding


async def build(settings: ConfigServiceSettings) -> ServiceApp:
    """Migrates (when enabled) and wires the service; nothing is served until `start()`."""
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database)
    engine = create_engine(settings.database)
    sessions = session_factory(engine)
    servicer = ConfigServicer(lambda: ConfigUnitOfWork(sessions))
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: config_service_pb2_grpc.add_ConfigServiceServicer_to_server(
            servicer, server
        ),
    )
    server = GrpcServer(settings.config_service_listen, [binding], settings.server_options())
    return ServiceApp(
        name="ConfigService",
        server=server,
        grace_seconds=settings.shutdown_grace_seconds,
        closers=[engine.dispose],
    )
