"""Composition root: builds SessionService from its settings."""

from __future__ import annotations

import asyncio

from session_service.servicer import SERVICE_NAME, SessionServicer
from session_service.settings import SessionServiceSettings
from session_service.storage import migrate
from session_service.storage.uow import SessionUnitOfWork
from shared._generated.tandem.config.v1 import config_service_pb2, config_service_pb2_grpc
from shared._generated.tandem.session.v1 import session_service_pb2_grpc
from shared.app import ServiceApp
from shared.db.engine import create_engine
from shared.db.uow import session_factory
from shared.rpc.channel import insecure_channel
from shared.rpc.server import GrpcServer, ServiceBinding

CONFIG_SERVICE_NAME: str = config_service_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name


async def build(settings: SessionServiceSettings) -> ServiceApp:
    """Migrates (when enabled) and wires the service; nothing is served until `start()`."""
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database)
    engine = create_engine(settings.database)
    sessions = session_factory(engine)
    # Channels connect lazily, so SessionService starts even while ConfigService is down.
    channel = insecure_channel(
        settings.config_service_target, CONFIG_SERVICE_NAME, settings.server_options()
    )
    servicer = SessionServicer(
        lambda: SessionUnitOfWork(sessions), config_service_pb2_grpc.ConfigServiceStub(channel)
    )
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: session_service_pb2_grpc.add_SessionServiceServicer_to_server(
            servicer, server
        ),
    )
    server = GrpcServer(settings.session_service_listen, [binding], settings.server_options())

    async def close_channel() -> None:
        await channel.close(None)

    return ServiceApp(
        name="SessionService",
        server=server,
        grace_seconds=settings.shutdown_grace_seconds,
        closers=[close_channel, engine.dispose],
    )
