"""Composition root: builds ConfigService from its settings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from sqlalchemy.engine import make_url

from config_service.access import POLICY
from config_service.configs.cache import ConfigCache
from config_service.configs.service import ConfigService, ConfigServiceOptions
from config_service.servicer import SERVICE_NAME, ConfigServicer
from config_service.settings import ConfigServiceSettings
from config_service.storage import migrate
from config_service.storage.repository import NOTIFY_CHANNEL
from config_service.storage.uow import ConfigUnitOfWork
from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared.app import ServiceApp
from shared.auth.interceptor import authentication
from shared.broadcast import Broadcast
from shared.bundle.validate import Limits
from shared.db.engine import create_engine, dispose_engine
from shared.db.notify import PostgresListener
from shared.db.uow import session_factory
from shared.rpc.server import GrpcServer, ServiceBinding
from shared.telemetry.setup import Telemetry

TELEMETRY_NAME = "tandem-config-service"


async def build(settings: ConfigServiceSettings, telemetry: Telemetry | None = None) -> ServiceApp:
    """Migrates (when enabled) and wires the service; nothing is served until `start()`.

    Telemetry comes from the OTEL_* variables unless given (tests pass in-memory exporters).
    """
    if telemetry is None:
        telemetry = Telemetry.from_environment(TELEMETRY_NAME, os.environ)
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database)
    engine = create_engine(settings.database)
    telemetry.instrument_engine(engine)
    sessions = session_factory(engine)
    changes = Broadcast()
    closers: list[Callable[[], Awaitable[None]]] = []
    if make_url(settings.database).get_backend_name() == "postgresql":
        # Other replicas' writes arrive as NOTIFYs; our own also wake watchers in process.
        # While the NOTIFY connection is down their writes go unheard, so cached latest
        # configs are not trusted; a reconnect (payload None) forgets them all.
        def heard(_payload: str | None) -> None:
            cache.invalidate()
            changes.notify()

        listener = PostgresListener(settings.database, NOTIFY_CHANNEL, heard)
        cache = ConfigCache(settings.config_cache_entries, trusted=listener.connected.is_set)
        await listener.start()
        closers.append(listener.stop)
    else:
        # One process owns an SQLite database: every write is its own.
        cache = ConfigCache(settings.config_cache_entries)
    closers.append(lambda: dispose_engine(engine))
    closers.append(telemetry.shutdown)

    def unit_of_work(write: bool = False) -> ConfigUnitOfWork:
        return ConfigUnitOfWork(sessions, write=write)

    keys = settings.key_store()
    service = ConfigService(
        unit_of_work,
        changes,
        ConfigServiceOptions(
            limits=Limits(max_bytes=settings.max_document_bytes),
            change_retention=settings.change_retention,
            watch_poll_seconds=settings.watch_poll_seconds,
            policies=keys.policy,
            package_limits=settings.package_limits(),
        ),
        cache,
    )
    servicer = ConfigServicer(service)
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: config_service_pb2_grpc.add_ConfigServiceServicer_to_server(
            servicer, server
        ),
    )
    server = GrpcServer(
        settings.config_service_listen,
        [binding],
        settings.server_options(),
        interceptors=[authentication(keys, POLICY, settings.token_verifier())],
        outer_interceptors=telemetry.server_interceptors(),
        credentials=settings.server_credentials(),
    )
    return ServiceApp(
        name="ConfigService",
        server=server,
        grace_seconds=settings.shutdown_grace_seconds,
        drain_seconds=settings.shutdown_drain_seconds,
        drainers=[service.drain],
        closers=closers,
    )
