"""What the two services' composition roots have in common: start, drain, release, run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from shared.logging import configure_logging
from shared.rpc.server import GrpcServer, wait_for_signal
from shared.settings import ServiceSettings

_log = logging.getLogger(__name__)


@dataclass
class ServiceApp:
    """A built service: its server and the resources to release after it stops."""

    name: str
    server: GrpcServer
    grace_seconds: float
    # Only on a real shutdown (stop() without a grace): accept calls this much longer.
    drain_seconds: float = 0.0
    # Called once health is NOT_SERVING, before the grace period: end long-lived streams so
    # their clients move to another replica instead of holding the shutdown.
    drainers: Sequence[Callable[[], None]] = field(default_factory=tuple)
    # Called with the grace period once the server has stopped: background work (running
    # turns) may use what is left of it to finish before it is ended cleanly.
    finishers: Sequence[Callable[[float], Awaitable[None]]] = field(default_factory=tuple)
    # Called in order after the server has stopped (listeners, engines, channels, ...).
    closers: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=tuple)

    async def start(self) -> None:
        """Starts serving."""
        await self.server.start()
        _log.info("%s listening on %s", self.name, self.server.address)

    async def stop(self, grace: float | None = None) -> None:
        """Drains the server, then releases what it used."""
        await self.server.mark_not_serving()
        for drain in self.drainers:
            drain()
        if grace is None:
            await asyncio.sleep(self.drain_seconds)
        grace = self.grace_seconds if grace is None else grace
        started = time.monotonic()
        await self.server.stop(grace)
        for finish in self.finishers:
            await finish(max(0.0, grace - (time.monotonic() - started)))
        for close in self.closers:
            await close()


S = TypeVar("S", bound=ServiceSettings)


def run_cli(
    prog: str,
    settings_type: type[S],
    build: Callable[[S], Awaitable[ServiceApp]],
    migrate: Callable[[S], None],
) -> None:
    """`python -m <service> [serve|migrate]`: serve until SIGTERM/SIGINT, or only migrate."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    settings = settings_type()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        migrate(settings)
        return

    async def serve() -> None:
        app = await build(settings)
        await app.start()
        try:
            await wait_for_signal()
            _log.info("%s: shutting down (grace %.1fs)", app.name, app.grace_seconds)
        finally:
            await app.stop()

    asyncio.run(serve())
