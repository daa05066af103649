"""Composition root: builds SessionService from its settings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from session_service.access import POLICY
from session_service.configs_client import ConfigClient
from session_service.prepare.cache import PreparedCache
from session_service.prepare.egress import EgressPolicy
from session_service.prepare.environment import BundleEnvironment, parse_patterns
from session_service.prepare.modules import ModuleRegistry
from session_service.prepare.preparer import ModuleReach, Preparer
from session_service.prepare.watcher import ConfigWatcher, WatchState
from session_service.servicer import SERVICE_NAME, SessionServicer
from session_service.sessions.forks import SessionForks
from session_service.sessions.service import SessionLifetimes, SessionService
from session_service.settings import SessionServiceSettings
from session_service.storage import migrate
from session_service.storage.uow import SessionUnitOfWork
from session_service.telemetry import TurnInstruments, observe_gauges
from session_service.turns.agents import AgentLimits
from session_service.turns.chat import Chat
from session_service.turns.engine import TurnRunner
from session_service.turns.retention import EventRetention
from session_service.turns.service import TurnOptions, TurnService
from session_service.turns.signals import CANCEL_CHANNEL, EVENTS_CHANNEL, Deadlines, TurnSignals
from session_service.turns.sweeper import DeadlineSweeper
from session_service.turns.writer import WriterOptions
from shared._generated.tandem.config.v1 import config_service_pb2, config_service_pb2_grpc
from shared._generated.tandem.session.v1 import session_service_pb2_grpc
from shared.app import ServiceApp
from shared.auth.interceptor import authentication
from shared.db.engine import create_engine, dispose_engine
from shared.db.notify import PostgresListener
from shared.db.uow import session_factory
from shared.rpc.channel import service_channel
from shared.rpc.server import GrpcServer, ServiceBinding
from shared.telemetry.setup import Telemetry

CONFIG_SERVICE_NAME: str = config_service_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name


@dataclass(kw_only=True)
class SessionServiceApp(ServiceApp):
    """SessionService as it runs: its server, and the components it owns and runs.

    The metric gauges read these same components; so may anything that embeds the service.
    """

    # Prepared bundles by (tenant, config id, revision), shared by every session.
    cache: PreparedCache
    # Follows ConfigService's change stream; the cache is trusted only while it is healthy.
    watcher: ConfigWatcher
    # Fetches, composes and checks bundles (through the cache).
    preparer: Preparer
    # Runs accepted turns in the background and writes their event logs.
    runner: TurnRunner
    # Accepts turns and serves event streams.
    turns: TurnService


TELEMETRY_NAME = "tandem-session-service"


def _always() -> bool:
    return True


async def build(
    settings: SessionServiceSettings,
    telemetry: Telemetry | None = None,
    modules: ModuleRegistry | None = None,
) -> SessionServiceApp:
    """Migrates (when enabled) and wires the service; nothing is served until `start()`.

    Telemetry comes from the OTEL_* variables unless given (tests pass in-memory exporters);
    modules from the installed distributions' entry points unless given.
    """
    if telemetry is None:
        telemetry = Telemetry.from_environment(TELEMETRY_NAME, os.environ)
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database)
    engine = create_engine(settings.database)
    telemetry.instrument_engine(engine)
    sessions = session_factory(engine)
    # Channels connect lazily, so SessionService starts even while ConfigService is down.
    channel = service_channel(
        settings.config_service_target,
        CONFIG_SERVICE_NAME,
        settings.server_options(),
        interceptors=telemetry.client_interceptors(),
        credentials=settings.config_channel_credentials(),
    )
    client = ConfigClient(
        config_service_pb2_grpc.ConfigServiceStub(channel),
        settings.config_call_timeout_seconds,
        service_key=settings.config_service_api_key,
    )
    cache = PreparedCache(settings.prepared_cache_size)
    watch_state = WatchState()
    keys = settings.key_store()
    workspaces = settings.workspaces()
    environment = BundleEnvironment(
        dict(os.environ),
        parse_patterns(settings.bundle_env_allow),
        keys.policy,
        settings.tenant_secrets_dir,
    )
    preparer = Preparer(
        client,
        cache,
        modules or ModuleRegistry.from_entry_points(),
        environment,
        watch_state,
        reach=ModuleReach(workspaces.rules(), EgressPolicy(settings.egress_allow)),
    )
    watcher = ConfigWatcher(
        client, preparer, watch_state, retry_seconds=settings.config_watch_retry_seconds
    )
    watcher.start()

    def unit_of_work(write: bool = False) -> SessionUnitOfWork:
        return SessionUnitOfWork(sessions, write=write)

    service = SessionService(
        unit_of_work,
        preparer,
        keys.policy,
        workspaces,
        SessionLifetimes(
            default_ttl=settings.session_ttl_seconds,
            default_delete_after=settings.session_delete_after_seconds,
        ),
        # A read that fails an abandoned turn may begin the queued one after it; the runner,
        # built below with this service, runs it.
        start_queued=lambda follows: runner.start_next(follows),
    )
    postgres = make_url(settings.database).get_backend_name() == "postgresql"
    listeners: list[PostgresListener] = []
    if postgres:
        # Other replicas' events and cancel requests arrive as NOTIFYs, for the hub and the
        # runner built below.
        listeners = [
            PostgresListener(
                settings.database, EVENTS_CHANNEL, lambda p: signals.on_events_payload(p)
            ),
            PostgresListener(
                settings.database, CANCEL_CHANNEL, lambda p: runner.on_cancel_payload(p)
            ),
        ]
        cancels_heard = listeners[1].connected.is_set
    else:
        cancels_heard = _always  # one process: CancelTurn reaches its runner directly
    signals = TurnSignals(cancels_heard)
    runner = TurnRunner(
        unit_of_work,
        lambda tenant, config_id, revision, overrides: preparer.prepare(
            tenant, config_id, revision, None, overrides=overrides, for_turn=True
        ),
        signals,
        WriterOptions(
            flush_seconds=settings.event_flush_seconds,
            flush_events=settings.event_flush_max,
            lease_seconds=settings.turn_lease_seconds,
        ),
        TurnInstruments.create(telemetry),
        workspaces=workspaces,
        sessions=service,
        # Agents start their turns through the turn service, which needs this runner first.
        turns=lambda: turns,
        agent_limits=AgentLimits(
            max_depth=settings.agents_max_depth, max_concurrent=settings.agents_max_concurrent
        ),
    )
    turns = TurnService(
        unit_of_work,
        runner,
        signals,
        TurnOptions(
            lease_seconds=settings.turn_lease_seconds,
            policies=keys.policy,
            max_queued_turns=settings.turn_queue_max,
        ),
    )
    closers: list[Callable[[], Awaitable[None]]] = []
    if postgres:
        for listener in listeners:
            await listener.start()
            closers.append(listener.stop)
    else:
        # One process owns an embedded database: a turn still RUNNING was cut off by a restart.
        await turns.recover_orphans()

    async def sweep_approvals() -> str:
        denied = await turns.expire_approvals()
        return f"denied {denied} approval(s) that nobody decided in time" if denied else ""

    async def sweep_sessions() -> str:
        expired = await service.expire_idle()
        deleted = await service.delete_expired()
        if not (expired or deleted):
            return ""
        return f"completed {expired} idle session(s), deleted {deleted} ended one(s)"

    sweeper = DeadlineSweeper(
        "approval-sweeper",
        sweep_approvals,
        turns.next_approval_expiry,
        signals.approval_deadlines,
        idle_seconds=settings.approval_sweep_seconds,
    )
    sweeper.start()
    session_sweeper = DeadlineSweeper(
        "session-sweeper",
        sweep_sessions,
        service.next_lifetime_deadline,
        service.deadlines,
        idle_seconds=settings.session_sweep_seconds,
    )
    session_sweeper.start()
    sweepers = [sweeper, session_sweeper]
    if settings.event_retention:
        retention = EventRetention(unit_of_work, settings.event_retention)
        compactor = DeadlineSweeper(
            "event-compactor",
            retention.compact,
            retention.next_due,
            # Nothing notes a due log here: turns end days before their deltas fall due, so
            # the periodic pass finds them in time.
            Deadlines(),
            idle_seconds=settings.event_retention_sweep_seconds,
        )
        compactor.start()
        sweepers.append(compactor)
    forks = SessionForks(
        unit_of_work,
        policies=keys.policy,
        workspaces=workspaces,
        signals=signals,
        deadlines=service.deadlines,
        start_queued=runner.start_next,
    )
    servicer = SessionServicer(service, turns, forks, Chat(service, turns))
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: session_service_pb2_grpc.add_SessionServiceServicer_to_server(
            servicer, server
        ),
    )
    server = GrpcServer(
        settings.session_service_listen,
        [binding],
        settings.server_options(),
        interceptors=[authentication(keys, POLICY, settings.token_verifier())],
        outer_interceptors=telemetry.server_interceptors(),
        credentials=settings.server_credentials(),
    )

    async def close_channel() -> None:
        await channel.close(None)

    app = SessionServiceApp(
        name="SessionService",
        server=server,
        grace_seconds=settings.shutdown_grace_seconds,
        drain_seconds=settings.shutdown_drain_seconds,
        drainers=[turns.drain],
        finishers=[runner.shutdown],
        closers=[
            *closers,
            *(each.stop for each in sweepers),
            watcher.stop,
            close_channel,
            lambda: dispose_engine(engine),
            telemetry.shutdown,
        ],
        cache=cache,
        watcher=watcher,
        preparer=preparer,
        runner=runner,
        turns=turns,
    )
    observe_gauges(telemetry, app.cache, lambda: app.runner.active, lambda: app.turns.open_streams)
    return app
