"""Shared reads that are never older than their callers: concurrent asks share one fetch.

A caller that asks for a key gets the result of a fetch that *started after it asked*. If no
fetch of the key is running, one starts now. If one is running, it started before this caller
asked and may have read the world before a write the caller already saw, so the caller waits
for the next fetch, which starts when the running one ends and serves everyone who asked
meanwhile. Under load, one fetch answers many callers; no caller ever gets an answer read
before it asked.

Each waiter applies its own deadline; the shared fetch runs under the fetcher's own bound and
is never cancelled by one waiter leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Slot(Generic[T]):
    # The fetch running now (it started before anyone who asks from now on).
    running: asyncio.Task[T] | None = None
    # The fetch that starts when the running one ends, for everyone who asked meanwhile.
    queued: asyncio.Task[T] | None = None


class FreshReads(Generic[T]):
    """Coalesces concurrent reads of a key, each answer fresher than its caller's ask."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, _Slot[T]] = {}
        self.fetches = 0

    async def read(
        self, key: Hashable, fetch: Callable[[], Awaitable[T]], wait_seconds: float | None = None
    ) -> T:
        """fetch()'s result from a run started after this call; waits at most wait_seconds."""
        slot = self._slots.setdefault(key, _Slot())
        if slot.running is None:
            task = self._start(key, slot, fetch)
        elif slot.queued is None:
            task = slot.queued = asyncio.create_task(self._after(key, slot, slot.running, fetch))
        else:
            task = slot.queued
        async with asyncio.timeout(wait_seconds):
            return await asyncio.shield(task)

    def _start(
        self, key: Hashable, slot: _Slot[T], fetch: Callable[[], Awaitable[T]]
    ) -> asyncio.Task[T]:
        self.fetches += 1
        task = asyncio.ensure_future(fetch())
        slot.running = task
        task.add_done_callback(lambda done: self._ended(key, slot, done))
        return task

    async def _after(
        self,
        key: Hashable,
        slot: _Slot[T],
        before: asyncio.Task[T],
        fetch: Callable[[], Awaitable[T]],
    ) -> T:
        # Its outcome is its own waiters' business; this fetch only has to start after it.
        with contextlib.suppress(BaseException):
            await asyncio.shield(before)
        slot.queued = None
        return await self._start(key, slot, fetch)

    def _ended(self, key: Hashable, slot: _Slot[T], done: asyncio.Task[T]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved here: a fetch nobody waits for any more is not an error
        if slot.running is done:
            slot.running = None
        if slot.running is None and slot.queued is None and self._slots.get(key) is slot:
            del self._slots[key]
