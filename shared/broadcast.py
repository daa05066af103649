"""Wake-ups inside one process: a waiter takes a ticket, a writer notifies every holder."""

from __future__ import annotations

import asyncio
import contextlib


class Broadcast:
    """Wakes every current waiter at once.

    Take a `ticket()` before reading, then `wait` on it if the read found nothing: a notify
    that lands between the read and the wait is then not missed.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def ticket(self) -> asyncio.Event:
        """The event the next `notify()` will set."""
        return self._event

    def notify(self) -> None:
        """Wakes everyone holding a ticket."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        """Marks the broadcast closed (the server is draining) and wakes everyone."""
        self.closed = True
        self.notify()

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float) -> None:
        """Waits for the ticket's notify, or at most that many seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await ticket.wait()
