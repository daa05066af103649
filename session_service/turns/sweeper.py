"""Denies approvals whose time ran out, so a paused turn does not wait forever; and ends
idle sessions and deletes ended ones whose retention ran out (`SessionSweeper`).

Every replica runs one. It sleeps until the earliest pending deadline it knows of: the one
the database reported at its last pass, or an earlier one this replica's turns note as they
pause (`TurnSignals.approval_deadlines`). Deadlines set on other replicas are picked up at
the idle poll, so a replica that dies with paused turns does not strand them. Each expired
approval is decided once, by whichever replica's decision commits first. A failed pass (the
database is away) is logged and tried again; the sweeper never stops on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Protocol

from session_service.turns.signals import Deadlines
from shared.clock import utcnow

_log = logging.getLogger(__name__)


class ExpiresApprovals(Protocol):
    """What the sweeper needs of `TurnService`."""

    async def expire_approvals(self, limit: int = 100) -> int: ...

    async def next_approval_expiry(self) -> datetime | None: ...


class ApprovalSweeper:
    """Denies expired approvals in the background."""

    def __init__(
        self,
        turns: ExpiresApprovals,
        deadlines: Deadlines,
        *,
        idle_seconds: float,
        retry_seconds: float = 1.0,
    ) -> None:
        self._turns = turns
        self._deadlines = deadlines
        self._idle = idle_seconds
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts sweeping."""
        self._task = asyncio.create_task(self._run(), name="approval-sweeper")

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
                denied = await self._turns.expire_approvals()
                due = await self._turns.next_approval_expiry()
            except Exception as exc:
                _log.warning("approval sweep failed; trying again", exc_info=exc)
                due = None
                await asyncio.sleep(self._retry)
                continue
            if denied:
                _log.info("denied %d approval(s) that nobody decided in time", denied)


class SweepsSessions(Protocol):
    """What the session sweeper needs of `SessionService`."""

    async def expire_idle(self, limit: int = 100) -> int: ...

    async def delete_expired(self, limit: int = 100) -> int: ...

    async def next_lifetime_deadline(self) -> datetime | None: ...


class SessionSweeper:
    """Completes idle sessions (IDLE_TIMEOUT) and deletes ended ones when they are due.

    It sleeps as the approval sweeper does: until the earliest deadline the database
    reported at its last pass, an earlier one this replica noted (a session created or
    ended here), or the idle poll, whichever comes first. Every replica runs one; each
    session is claimed under its row lock, so it is completed, and deleted, once.
    """

    def __init__(
        self,
        sessions: SweepsSessions,
        deadlines: Deadlines,
        *,
        idle_seconds: float,
        retry_seconds: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._deadlines = deadlines
        self._idle = idle_seconds
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts sweeping."""
        self._task = asyncio.create_task(self._run(), name="session-sweeper")

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
                expired = await self._sessions.expire_idle()
                deleted = await self._sessions.delete_expired()
                due = await self._sessions.next_lifetime_deadline()
            except Exception as exc:
                _log.warning("session sweep failed; trying again", exc_info=exc)
                due = None
                await asyncio.sleep(self._retry)
                continue
            if expired or deleted:
                _log.info("completed %d idle session(s), deleted %d ended one(s)", expired, deleted)
