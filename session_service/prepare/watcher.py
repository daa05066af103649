"""Follows ConfigService's change stream and invalidates what was prepared from changed configs.

While the stream is up, cached bundles are trusted as they are; while it is down, the
preparer revalidates on use. On reconnect the stream resumes from the last sequence seen, so
nothing is missed; if that is no longer retained, everything derived is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from session_service.prepare.source import ConfigChanges
from shared.errors import OutOfRange, TandemError

_log = logging.getLogger(__name__)


class WatchState:
    """Whether the change stream is up: set by the watcher, read by the preparer.

    Its own object, so that the preparer and the watcher are each built once, with what they
    need, and neither is wired into the other afterwards.
    """

    def __init__(self) -> None:
        self.healthy = False
        self.connected = asyncio.Event()

    def up(self) -> None:
        """The stream is established."""
        self.healthy = True
        self.connected.set()

    def down(self) -> None:
        """The stream is gone; cached bundles must be revalidated on use."""
        self.healthy = False
        self.connected.clear()


class Forgets(Protocol):
    """What the watcher tells about changes: the preparer, which drops what they outdate."""

    def forget(self, config_id: str, name: str, *, created: bool = False) -> None:
        """A config changed: drop what was derived from it."""

    def forget_all(self) -> None:
        """The change history is gone: nothing derived can be trusted."""


class ConfigWatcher:
    """The cache's background subscription to WatchConfigs."""

    def __init__(
        self,
        client: ConfigChanges,
        preparer: Forgets,
        state: WatchState,
        retry_seconds: float = 1.0,
    ) -> None:
        self._client = client
        self._preparer = preparer
        self._state = state
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.last_sequence = 0

    @property
    def healthy(self) -> bool:
        """True while the change stream is established."""
        return self._state.healthy

    @property
    def connected(self) -> asyncio.Event:
        """Set while the change stream is established."""
        return self._state.connected

    def start(self) -> None:
        """Starts following in the background."""
        self._task = asyncio.create_task(self._run(), name="config-watch")

    async def stop(self) -> None:
        """Stops following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._state.down()

    async def _run(self) -> None:
        while True:
            try:
                async for change in self._client.watch(self.last_sequence, self._established):
                    self._preparer.forget(change.config_id, change.name, created=change.created)
                    self.last_sequence = change.sequence
            except OutOfRange:
                _log.warning(
                    "config changes after %s are gone; dropping prepared bundles",
                    self.last_sequence,
                )
                self.last_sequence = 0
            except TandemError as exc:
                _log.warning("config change stream down (%s); retrying", exc)
            finally:
                self._state.down()
            await asyncio.sleep(self._retry_seconds)

    def _established(self) -> None:
        if self.last_sequence == 0:
            # Starting from now: whatever was derived before cannot be checked against history.
            self._preparer.forget_all()
        self._state.up()
