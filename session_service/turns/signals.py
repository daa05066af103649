"""Wake-ups for followers of session event logs, and cancel requests, across replicas.

In process, whoever commits events hands them to this replica's `EventHub`. On PostgreSQL the
writer also NOTIFYs inside its transaction (delivered at commit) with the session's log key,
the last sequence it wrote and the replica it wrote from; every other replica's listener
hands that to its hub, which then knows what its feed lacks. A replica ignores its own
NOTIFYs: its hub got those events from memory (and may get the NOTIFY first).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from session_service.turns.hub import EventHub

EVENTS_CHANNEL = "tandem_session_events"
CANCEL_CHANNEL = "tandem_turn_cancel"


def log_key(tenant_id: str, session_id: str) -> str:
    """The key of one session's event log, in the hub and in NOTIFY payloads."""
    return f"{tenant_id}/{session_id}"


NO_ORIGIN = "-"


@dataclass(frozen=True)
class Committed:
    """What an events NOTIFY says: the log under key is committed up to sequence."""

    key: str
    sequence: int | None
    origin: str = NO_ORIGIN


def events_payload(key: str, last_sequence: int, origin: str = NO_ORIGIN) -> str:
    """The NOTIFY payload saying the log under key is committed up to last_sequence.

    origin names the replica that hands the events to its own followers from memory.
    """
    return f"{key} {last_sequence} {origin or NO_ORIGIN}"


def parse_events_payload(payload: str) -> Committed:
    """What a NOTIFY payload says; a sequence of None when it names none."""
    # Split from the right: the key is the one part that may hold spaces.
    parts = payload.rsplit(" ", 2)
    if len(parts) == 3 and parts[0] and parts[1].isdigit():
        return Committed(parts[0], int(parts[1]), parts[2])
    return Committed(payload, None)


class Deadlines:
    """The earliest deadline someone noted since it was last taken, and a wake-up for it."""

    def __init__(self) -> None:
        self._earliest: datetime | None = None
        self._noted = asyncio.Event()

    def note(self, deadline: datetime) -> None:
        """A new deadline; the waiter wakes if it is earlier than what it waits for."""
        if self._earliest is None or deadline < self._earliest:
            self._earliest = deadline
        self._noted.set()

    async def wait(self, seconds: float) -> datetime | None:
        """Waits up to seconds for a noted deadline; returns (and forgets) the earliest."""
        if not self._noted.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._noted.wait()
        self._noted.clear()
        earliest, self._earliest = self._earliest, None
        return earliest


def _unheard() -> bool:
    return False


class TurnSignals:
    """This replica's event hub and the tag of its NOTIFYs."""

    def __init__(self, cancels_heard: Callable[[], bool] = _unheard) -> None:
        self.hub = EventHub()
        # Tags this replica's NOTIFYs, so that it can ignore them.
        self.origin = uuid.uuid4().hex[:16]
        # Whether a cancel request reaches this replica's turns without them asking the
        # database: always with one process (CancelTurn finds its runner), and on PostgreSQL
        # while the cancel channel's listener is connected. Running turns poll their cancel
        # flag often only while it is False.
        self.cancels_heard = cancels_heard
        # When this replica paused a turn on approvals that time out: the sweeper wakes.
        self.approval_deadlines = Deadlines()

    def on_events_payload(self, payload: str | None) -> None:
        """A NOTIFY (or a reconnect, None: anything may have been missed) on the events channel."""
        if payload is None:
            self.hub.wake_all(dirty=True)
            return
        said = parse_events_payload(payload)
        if said.origin != self.origin:
            self.hub.committed(said.key, said.sequence)
