"""Follows ConfigService's change stream and invalidates what was prepared from changed configs.

While the stream is up, cached bundles are trusted as they are; while it is down, the
preparer revalidates on use. On reconnect the stream resumes from the last sequence seen, so
nothing is missed; if that is no longer retained, everything derived is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from session_service.configs_client import ConfigClient
from session_service.prepare.preparer import Preparer
from shared.errors import OutOfRange, TandemError

_log = logging.getLogger(__name__)


class ConfigWatcher:
    """The cache's background subscription to WatchConfigs."""

    def __init__(
        self, client: ConfigClient, preparer: Preparer | None = None, retry_seconds: float = 1.0
    ) -> None:
        self._client = client
        self.preparer = preparer
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.last_sequence = 0
        self._healthy = False
        self.connected = asyncio.Event()

    @property
    def healthy(self) -> bool:
        """True while the change stream is established."""
        return self._healthy

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
        self._healthy = False

    async def _run(self) -> None:
        assert self.preparer is not None, "wire a preparer before start()"
        while True:
            try:
                async for change in self._client.watch(self.last_sequence, self._established):
                    self.preparer.forget(change.config_id, change.name, created=change.created)
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
                self._healthy = False
                self.connected.clear()
            await asyncio.sleep(self._retry_seconds)

    def _established(self) -> None:
        assert self.preparer is not None
        if self.last_sequence == 0:
            # Starting from now: whatever was derived before cannot be checked against history.
            self.preparer.forget_all()
        self._healthy = True
        self.connected.set()
