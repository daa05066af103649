"""The event log writer of one running turn.

The running turn is the only writer of its session's log (the session row names it as the
active turn), so sequences are assigned here, in memory, and stay gap-free. Each flush is
one transaction: the events, the transcript messages they produced, and the session's
counters together; readers are woken only after it commits, so nothing is ever sent that
is not stored. Text deltas are batched: a flush happens when enough have piled up, when a
short interval has passed, or with the next event that is not a delta.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from session_service.sessions.model import Message
from session_service.storage.repository import announce
from session_service.storage.uow import SessionUnitOfWork
from session_service.turns.model import TERMINAL_KINDS, Event, EventKind, TurnStatus
from session_service.turns.signals import EVENTS_CHANNEL, TurnSignals, log_key
from shared.db.types import utcnow

DELTA_KINDS = frozenset({EventKind.CONTENT_DELTA, EventKind.THINKING_DELTA})


@dataclass(frozen=True)
class WriterOptions:
    """How deltas are batched."""

    flush_seconds: float = 0.025
    flush_events: int = 64
    # How often a turn re-reads its cancel flag (the safety net behind NOTIFY).
    cancel_check_seconds: float = 0.5
    # How long a turn stays owned without renewal; it is renewed every third of that.
    lease_seconds: float = 15.0


class EventWriter:
    """Appends one turn's events and messages to the log, batching deltas."""

    def __init__(
        self,
        unit_of_work: Callable[..., SessionUnitOfWork],
        signals: TurnSignals,
        tenant_id: str,
        session_id: str,
        turn_id: str,
        last_sequence: int,
        message_count: int,
        options: WriterOptions,
        on_cancel_requested: Callable[[], object],
    ) -> None:
        self._unit_of_work = unit_of_work
        self._signals = signals
        self._tenant_id = tenant_id
        self._session_id = session_id
        self._turn_id = turn_id
        self._options = options
        self._on_cancel_requested = on_cancel_requested
        self.last_sequence = last_sequence
        self.message_count = message_count
        self._pending: list[Event] = []
        self._messages: list[Message] = []
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self.flushes = 0

    def start(self) -> None:
        """Starts the timer that flushes lingering deltas and checks for cancel requests."""
        self._ticker = asyncio.create_task(self._tick(), name=f"turn-writer:{self._turn_id}")

    async def stop(self) -> None:
        """Stops the timer (the final flush is the caller's)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def next_message_sequence(self) -> int:
        """The transcript position the next message will take."""
        return self.message_count + len(self._messages) + 1

    async def add(self, kind: EventKind, payload: Mapping[str, Any]) -> None:
        """Queues an event; anything but a delta is flushed at once, with what came before."""
        self.last_sequence += 1
        self._pending.append(
            Event(self.last_sequence, self._turn_id, kind, dict(payload), utcnow())
        )
        if kind in TERMINAL_KINDS:
            return  # written by the caller's flush(end=...), in the transaction that ends the turn
        if kind not in DELTA_KINDS or len(self._pending) >= self._options.flush_events:
            await self.flush()

    def add_message(self, message: Message) -> Message:
        """Queues a transcript message for the next flush, numbered and tied to this turn."""
        numbered = dataclasses.replace(
            message, sequence=self.next_message_sequence(), turn_id=self._turn_id
        )
        self._messages.append(numbered)
        return numbered

    async def flush(self, *, end: TurnStatus | None = None) -> None:
        """Writes what is queued in one transaction; with end, also closes the turn."""
        async with self._lock:
            events, self._pending = self._pending, []
            messages, self._messages = self._messages, []
            if not events and not messages and end is None:
                return
            try:
                await self._write(events, messages, end)
            except BaseException:
                # Not written: keep them for the next attempt, in order.
                self._pending = events + self._pending
                self._messages = messages + self._messages
                raise
            self.message_count += len(messages)
            self.flushes += 1
        self._signals.events.notify(log_key(self._tenant_id, self._session_id))

    async def _write(
        self, events: Sequence[Event], messages: Sequence[Message], end: TurnStatus | None
    ) -> None:
        async with self._unit_of_work(write=True) as uow:
            current = await uow.sessions.get(self._tenant_id, self._session_id, for_update=True)
            if current is None:
                return  # deleted under us; nothing left to write to
            for message in messages:
                await uow.messages.append(self._tenant_id, self._session_id, message)
            if events:
                await uow.events.append(self._tenant_id, self._session_id, events)
            last = events[-1].sequence if events else current.last_sequence
            now = utcnow()
            await uow.sessions.save(
                self._tenant_id,
                dataclasses.replace(
                    current,
                    last_sequence=last,
                    message_count=current.message_count + len(messages),
                    active_turn_id="" if end is not None else current.active_turn_id,
                    version=current.version + 1,
                    update_time=now,
                ),
            )
            await uow.turns.update(
                self._tenant_id,
                self._session_id,
                self._turn_id,
                last_sequence=last,
                status=end,
                end_time=now if end is not None else None,
                lease_expires=now + timedelta(seconds=self._options.lease_seconds),
            )
            if events:
                await announce(
                    uow.session, EVENTS_CHANNEL, log_key(self._tenant_id, self._session_id)
                )
            await uow.commit()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self._options.cancel_check_seconds
        renew_every = self._options.lease_seconds / 3
        next_renewal = loop.time() + renew_every
        while True:
            await asyncio.sleep(self._options.flush_seconds)
            if self._pending:
                await self.flush()
            if loop.time() >= next_renewal:
                next_renewal = loop.time() + renew_every
                await self._renew()
            if loop.time() >= next_check:
                next_check = loop.time() + self._options.cancel_check_seconds
                async with self._unit_of_work() as uow:
                    requested = await uow.turns.cancel_requested(
                        self._tenant_id, self._session_id, self._turn_id
                    )
                if requested:
                    self._on_cancel_requested()

    async def _renew(self) -> None:
        async with self._lock, self._unit_of_work(write=True) as uow:
            await uow.turns.update(
                self._tenant_id,
                self._session_id,
                self._turn_id,
                lease_expires=utcnow() + timedelta(seconds=self._options.lease_seconds),
            )
            await uow.commit()
