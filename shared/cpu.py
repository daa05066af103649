"""CPU-heavy work off the event loop, a few pieces at a time."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")


class CpuSlots:
    """Runs CPU-heavy work (YAML parsing, validation, edits) in worker threads, a few at once.

    The event loop keeps answering health checks and other tenants meanwhile. A caller that
    gives up does not free its slot before its work has really finished, so a burst of
    cancelled requests cannot pile up more threads than there are slots.
    """

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(max(1, slots))

    async def run(self, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """function(*args, **kwargs) in a worker thread, once a slot is free."""
        await self._slots.acquire()
        try:
            call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
            future = asyncio.get_running_loop().run_in_executor(None, call)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(future)
