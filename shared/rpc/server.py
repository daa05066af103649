"""Assembly of a Tandem gRPC server: health, reflection, limits, error mapping, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared.listing import PageTokenKeys
from shared.rpc.requests import RequestGate, RequestLimits
from shared.rpc.status import ErrorInterceptor


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to mount: its full proto name and the generated `add_*_to_server` call."""

    name: str
    register: Callable[[grpc.aio.Server], None]


@dataclass(frozen=True)
class ServerOptions:
    """Transport limits set explicitly on every server."""

    max_receive_message_bytes: int
    max_send_message_bytes: int
    extra: Sequence[tuple[str, int | str]] = field(default_factory=tuple)
    # Servers only: close client connections after this long (0 = never), so clients
    # re-resolve and spread over replicas that were added since they connected.
    max_connection_age_seconds: float = 0.0
    max_connection_age_grace_seconds: float = 0.0
    # Servers only: RPCs run at once, streams included (0 = no cap).
    maximum_concurrent_rpcs: int = 0
    # Servers only: each method's own request cap, checked after authentication (None: every
    # method may use max_receive_message_bytes).
    request_limits: RequestLimits | None = None
    # Servers only: the keys that sign page tokens (None: a key of this process only).
    page_token_keys: PageTokenKeys | None = None

    def for_services(self, services: Sequence[str]) -> ServerOptions:
        """These options for a server of services: nothing larger than their largest request
        is buffered before the caller is known."""
        limits = self.request_limits or RequestLimits(self.max_receive_message_bytes)
        ceiling = min(self.max_receive_message_bytes, limits.largest(services))
        capped = RequestLimits(
            min(limits.default_bytes, ceiling),
            {method: min(size, ceiling) for method, size in limits.methods.items()},
        )
        return dataclasses.replace(self, max_receive_message_bytes=ceiling, request_limits=capped)

    def channel_args(self) -> list[tuple[str, int | str]]:
        """The options as gRPC channel arguments."""
        return [
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            # Two servers on one port would split traffic unpredictably; fail to bind instead.
            ("grpc.so_reuseport", 0),
            *self.extra,
        ]

    def server_args(self) -> list[tuple[str, int | str]]:
        """The options as arguments for a server, connection age included."""
        args = self.channel_args()
        if self.max_connection_age_seconds > 0:
            args.append(("grpc.max_connection_age_ms", int(self.max_connection_age_seconds * 1000)))
            args.append(
                (
                    "grpc.max_connection_age_grace_ms",
                    int(self.max_connection_age_grace_seconds * 1000),
                )
            )
        return args


class GrpcServer:
    """One `grpc.aio` server with per-service health and server reflection."""

    def __init__(
        self,
        listen: str,
        services: Sequence[ServiceBinding],
        options: ServerOptions,
        interceptors: Sequence[Any] = (),
        outer_interceptors: Sequence[Any] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self._credentials = credentials
        self._listen = listen
        self._services = list(services)
        options = options.for_services([s.name for s in self._services])
        assert options.request_limits is not None
        # The typing stubs predate grpc_health's asyncio servicer.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._server = grpc.aio.server(
            # Outer ones (telemetry) see the status the error mapping produced; the gate is
            # innermost, so requests are decoded only once the caller is authenticated.
            interceptors=[
                *outer_interceptors,
                ErrorInterceptor(),
                *interceptors,
                RequestGate(options.request_limits, options.page_token_keys),
            ],
            options=options.server_args(),
            maximum_concurrent_rpcs=options.maximum_concurrent_rpcs or None,
        )
        for service in self._services:
            service.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [s.name for s in self._services]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        self.port = 0

    @property
    def address(self) -> str:
        """host:port actually bound, valid after `start()`."""
        host = self._listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Binds, starts serving, and marks every service SERVING."""
        self.port = (
            self._server.add_secure_port(self._listen, self._credentials)
            if self._credentials is not None
            else self._server.add_insecure_port(self._listen)
        )
        if self.port == 0:
            raise OSError(f"could not bind {self._listen}")
        await self._server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set("", serving)
        for service in self._services:
            await self.health.set(service.name, serving)

    async def mark_not_serving(self) -> None:
        """Health turns NOT_SERVING for every service, so balancers and probes drain us."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, then stop with a grace period for RPCs in flight."""
        await self.mark_not_serving()
        await self._server.stop(grace)


async def wait_for_signal() -> None:
    """Returns on the first SIGTERM or SIGINT.

    The handlers stay installed afterwards, so a second signal during the drain (a terminal's
    Ctrl-C reaches every process in the group) does not interrupt the graceful shutdown.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
