"""Background work that falls due at deadlines: approvals that waited too long are denied,
idle sessions are completed and ended sessions deleted when their retention runs out.

Every replica runs one sweeper per kind of deadline. Each sleeps until the earliest
deadline it knows of: the one the database reported at its last pass, or an earlier one
noted on this replica (`Deadlines`: a turn pausing on approvals, a session created or
ended here). Deadlines set on other replicas are picked up at the idle poll, so a replica
that dies does not strand them. Each item is claimed under its row lock by the pass that
handles it, so it is handled once, whichever replica's pass commits first. A failed pass
(the database is away) is logged and tried again; a sweeper never stops on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from session_service.turns.signals import Deadlines
from shared.clock import utcnow

_log = logging.getLogger(__name__)


class DeadlineSweeper:
    """Runs `sweep` whenever a deadline may be due; `next_due` says when the next one is.

    sweep returns a line to log (empty: nothing was done).
    """

    def __init__(
        self,
        name: str,
        sweep: Callable[[], Awaitable[str]],
        next_due: Callable[[], Awaitable[datetime | None]],
        deadlines: Deadlines,
        *,
        idle_seconds: float,
        retry_seconds: float = 1.0,
    ) -> None:
        self._name = name
        self._sweep = sweep
        self._next_due = next_due
        self._deadlines = deadlines
        self._idle = idle_seconds
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts sweeping."""
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Stops sweeping and waits for the current pass."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        due: datetime | None = None
        first = True
        while True:
            if not first:
                wait = self._idle
                if due is not None:
                    wait = min(wait, max((due - utcnow()).total_seconds(), 0.0))
                noted = await self._deadlines.wait(wait)
                if noted is not None and (due is None or noted < due):
                    due = noted
                if due is not None and due > utcnow() and noted is not None:
                    continue  # woken by an earlier deadline: sleep until it
            first = False
            try:
                done = await self._sweep()
                due = await self._next_due()
            except Exception as exc:
                _log.warning("%s failed; trying again", self._name, exc_info=exc)
                due = None
                await asyncio.sleep(self._retry)
                continue
            if done:
                _log.info("%s: %s", self._name, done)
