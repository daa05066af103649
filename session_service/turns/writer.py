"""The event log writer of one running turn.

The running turn is the only writer of its session's log (the session row names it as the
active turn), so sequences are assigned here, in memory, and stay gap-free. Each flush is
one transaction: the events, the transcript messages they produced, and the session's
counters together. Only after it commits are the events handed to this replica's hub (and,
by NOTIFY, to the others), so nothing is ever sent that is not stored. Text deltas are
batched: a flush happens when enough have piled up, when a short interval has passed, or
with the next event that is not a delta.

When the database fails:
- a transient error (a restart, a dropped connection, a lock timeout) is retried with
  backoff, the batch kept in order, for up to `retry_seconds`; a retry first checks whether
  the attempt before it committed after all, since a connection can drop after COMMIT;
- a write the database refuses for good (data it will never take) drops what was queued,
  so the turn can still end with a final event that can be stored (`EventNotStored`);
- if the session no longer names this turn as active, a reader failed it as abandoned
  while this replica could not renew its lease: the sequences held here now belong to
  someone else, so nothing more is written (`TurnLost`).
The background timer survives all of these; when the turn cannot go on it interrupts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from session_service.ports import SessionUoW, SessionUoWFactory
from session_service.sessions.model import Message, storable_message
from session_service.turns import log
from session_service.turns.log import NO_LEASE, NextTurn
from session_service.turns.model import (
    TERMINAL_KINDS,
    Approval,
    Event,
    EventBody,
    EventKind,
    TurnStatus,
    storable_body,
)
from session_service.turns.signals import TurnSignals, log_key
from shared.clock import utcnow
from shared.db.faults import is_transient

_log = logging.getLogger(__name__)

DELTA_KINDS = frozenset({EventKind.CONTENT_DELTA, EventKind.THINKING_DELTA})


class WriteProblem(Exception):
    """The turn's writer cannot go on as it was."""


class TurnLost(WriteProblem):
    """The session no longer names this turn as active: someone failed it as abandoned."""


class EventNotStored(WriteProblem):
    """The database refused the turn's events for good; what was queued was dropped."""


class StorageUnavailable(WriteProblem):
    """The database stayed unreachable for longer than the writer retries."""


@dataclass(frozen=True)
class WriterOptions:
    """How deltas are batched, the lease renewed, and database faults retried."""

    flush_seconds: float = 0.025
    flush_events: int = 64
    # How often a turn re-reads its cancel flag while cancel requests may go unheard (the
    # NOTIFY listener is down), and while they are heard (a safety net only).
    cancel_check_seconds: float = 0.5
    cancel_safety_seconds: float = 30.0
    # How long a turn stays owned without renewal; it is renewed every third of that.
    lease_seconds: float = 15.0
    # Backoff between attempts after a transient database error ...
    retry_first_seconds: float = 0.05
    retry_max_seconds: float = 2.0
    # ... and how long one write keeps trying before the turn gives up.
    retry_seconds: float = 60.0
    # Longest any one database call of the writer may take; then it counts as failed (and
    # transient). Without it, a call caught in a server restart can wait forever.
    call_seconds: float = 10.0


@contextlib.asynccontextmanager
async def bounded(seconds: float) -> AsyncIterator[None]:
    """Bounds a database call; running out raises TimeoutError, which is transient.

    Whatever the driver raises while the call unwinds after the deadline is reported as the
    timeout, since the call failed for that reason.
    """
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield
    except Exception as exc:
        if deadline.expired() and not isinstance(exc, TimeoutError):
            raise TimeoutError(f"database call took over {seconds:g}s") from exc
        raise


def _describe(error: BaseException) -> str:
    # The class and SQLSTATE only: a driver's message can quote the statement's parameters,
    # which hold user text.
    cause = getattr(error, "orig", None) or error
    state = getattr(cause, "sqlstate", None)
    return type(cause).__name__ + (f" ({state})" if state else "")


class EventWriter:
    """Appends one turn's events and messages to the log, batching deltas."""

    def __init__(
        self,
        unit_of_work: SessionUoWFactory,
        signals: TurnSignals,
        tenant_id: str,
        session_id: str,
        turn_id: str,
        last_sequence: int,
        message_count: int,
        options: WriterOptions,
        on_cancel_requested: Callable[[], object],
        start_next: Callable[[NextTurn], None],
    ) -> None:
        self._unit_of_work = unit_of_work
        self._signals = signals
        self._tenant_id = tenant_id
        self._session_id = session_id
        self._key = log_key(tenant_id, session_id)
        self._turn_id = turn_id
        self._options = options
        # Interrupts the turn: on a cancel request, and when the writer cannot go on.
        self._interrupt = on_cancel_requested
        self._start_next = start_next
        self.last_sequence = last_sequence
        self.committed_sequence = last_sequence
        self.message_count = message_count
        self._pending: list[Event] = []
        self._messages: list[Message] = []
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self.flushes = 0
        # Why the writer stopped going on as before (None while all is well).
        self.problem: WriteProblem | None = None
        self.ended = False
        # Loop time after which a write stops retrying (sooner when the replica stops).
        self._give_up_at: float | None = None
        self._check_now = False

    @property
    def lost(self) -> bool:
        """Whether the turn was failed by someone else; nothing more may be written."""
        return isinstance(self.problem, TurnLost)

    def start(self) -> None:
        """Starts the timer that flushes lingering deltas, renews the lease, checks cancels."""
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

    async def add(self, body: EventBody, *, hold: bool = False) -> None:
        """Queues an event; anything but a delta is flushed at once, with what came before
        (unless hold: the caller's next flush writes it)."""
        if self.lost:
            raise TurnLost(f"turn {self._turn_id} was failed elsewhere")
        self.last_sequence += 1
        self._pending.append(
            Event(self.last_sequence, self._turn_id, storable_body(body), utcnow())
        )
        kind = body.kind
        if kind in TERMINAL_KINDS:
            return  # written by the caller's flush(end=...), in the transaction that ends the turn
        if hold:
            return
        if kind not in DELTA_KINDS or len(self._pending) >= self._options.flush_events:
            await self.flush()

    def add_message(self, message: Message) -> Message:
        """Queues a transcript message for the next flush, numbered and tied to this turn."""
        numbered = storable_message(
            dataclasses.replace(
                message, sequence=self.next_message_sequence(), turn_id=self._turn_id
            )
        )
        self._messages.append(numbered)
        return numbered

    def check_cancel_soon(self) -> None:
        """Re-reads the cancel flag at the next tick (cancel requests may have gone unheard)."""
        self._check_now = True

    def hurry(self, seconds: float) -> None:
        """From now on, gives up on an unavailable database after at most seconds."""
        deadline = asyncio.get_running_loop().time() + seconds
        self._give_up_at = deadline if self._give_up_at is None else min(self._give_up_at, deadline)

    def discard(self) -> None:
        """Drops everything queued and not yet written; the next event follows the last stored."""
        self._pending.clear()
        self._messages.clear()
        self.last_sequence = self.committed_sequence

    async def flush(
        self,
        *,
        end: TurnStatus | None = None,
        display_name: str = "",
        waiting: Sequence[Approval] = (),
    ) -> None:
        """Writes what is queued in one transaction; with end, also closes the turn (and
        gives an unnamed session display_name, in the same transaction); with waiting, the
        turn pauses on those approvals instead (see log.append).

        Raises TurnLost, EventNotStored (the queue is dropped) or StorageUnavailable (the
        queue is kept).
        """
        async with self._lock:
            if self.lost:
                raise TurnLost(f"turn {self._turn_id} was failed elsewhere")
            events, self._pending = self._pending, []
            messages, self._messages = self._messages, []
            if not events and not messages and end is None and not waiting:
                return
            try:
                lease, written = await self._write_retrying(
                    events, messages, end, display_name, waiting
                )
            except (TurnLost, EventNotStored) as exc:
                self.problem = exc
                self.discard()
                raise
            except BaseException as exc:
                # Not written: keep them for the next attempt, in order.
                self._pending = events + self._pending
                self._messages = messages + self._messages
                if isinstance(exc, StorageUnavailable):
                    self.problem = exc
                raise
            if events:
                self.committed_sequence = events[-1].sequence
            self.message_count += len(messages)
            self.flushes += 1
            if end is not None or waiting:
                # Over for this runner: a paused turn is resumed by a new one.
                self.ended = True
            deadlines = [a.expire_time for a in waiting if a.expire_time is not None]
            if deadlines:
                self._signals.approval_deadlines.note(min(deadlines))
            # Committed: this replica's followers get the events from memory, as stored (a
            # rolled-back turn's end reads differently, and the next queued turn may follow).
            follows = written.next if written is not None else None
            if end is not None:
                held = follows.lease_expires if follows is not None else None
            else:
                held = NO_LEASE if waiting else lease
            self._signals.hub.publish(
                self._key, written.events if written is not None else events, held
            )
            if follows is not None:
                # This replica ended the turn, so it runs the one that began after it.
                self._start_next(follows)

    async def _write_retrying(
        self,
        events: Sequence[Event],
        messages: Sequence[Message],
        end: TurnStatus | None,
        display_name: str = "",
        waiting: Sequence[Approval] = (),
    ) -> tuple[datetime, log.Written | None]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = self._options.retry_first_seconds
        attempt = 0
        while True:
            try:
                async with bounded(self._options.call_seconds):
                    return await self._write(
                        events, messages, end, display_name, waiting, retry=attempt > 0
                    )
            except TurnLost as exc:
                _log.warning("%s; it stops without writing", exc)
                raise
            except Exception as exc:
                if not is_transient(exc):
                    _log.error(
                        "turn %s: the database refused its events for good (%s); failing the turn",
                        self._turn_id,
                        _describe(exc),
                    )
                    raise EventNotStored(_describe(exc)) from exc
                give_up = started + self._options.retry_seconds
                if self._give_up_at is not None:
                    give_up = min(give_up, self._give_up_at)
                if loop.time() + delay > give_up:
                    _log.error(
                        "turn %s: the database stayed unavailable for %.0fs (%s); giving up",
                        self._turn_id,
                        loop.time() - started,
                        _describe(exc),
                    )
                    raise StorageUnavailable(_describe(exc)) from exc
                _log.warning(
                    "turn %s: the database is unavailable (%s); retrying in %.2fs",
                    self._turn_id,
                    _describe(exc),
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._options.retry_max_seconds)
            attempt += 1

    async def _write(
        self,
        events: Sequence[Event],
        messages: Sequence[Message],
        end: TurnStatus | None,
        display_name: str,
        waiting: Sequence[Approval],
        *,
        retry: bool,
    ) -> tuple[datetime, log.Written | None]:
        """Writes one batch; the log's account of it (None: an earlier attempt committed it)."""
        now = utcnow()
        lease = now + timedelta(seconds=self._options.lease_seconds)
        async with self._unit_of_work(write=True) as uow:
            current = await uow.sessions.get(self._tenant_id, self._session_id, for_update=True)
            if current is None:
                raise TurnLost(f"the session of turn {self._turn_id} was deleted")
            if retry and await self._already_written(uow, events, messages):
                return lease, None
            if current.active_turn_id != self._turn_id:
                raise TurnLost(
                    f"turn {self._turn_id} was failed as abandoned while this replica could "
                    "not renew its lease"
                )
            written = await log.write(
                uow,
                self._tenant_id,
                current,
                events,
                messages,
                now=now,
                origin=self._signals.origin,
                lease_expires=lease,
                end=end,
                display_name=display_name,
                waiting=waiting,
                next_lease_seconds=self._options.lease_seconds,
            )
            await uow.commit()
        return lease, written

    async def _already_written(
        self, uow: SessionUoW, events: Sequence[Event], messages: Sequence[Message]
    ) -> bool:
        """Whether an earlier attempt of this batch committed though its caller saw an error."""
        if events:
            last = events[-1]
            stored = await uow.events.at(self._tenant_id, self._session_id, last.sequence)
            return (
                stored is not None
                and stored.turn_id == self._turn_id
                and stored.kind is last.kind
                and stored.event_time == last.event_time
            )
        if messages:
            message = await uow.messages.at(
                self._tenant_id, self._session_id, messages[-1].sequence
            )
            return message is not None and message.message_id == messages[-1].message_id
        return False

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self._options.cancel_check_seconds
        renew_every = self._options.lease_seconds / 3
        next_renewal = loop.time() + renew_every
        delay = self._options.retry_first_seconds
        while not self.ended:
            await asyncio.sleep(self._options.flush_seconds)
            try:
                if self._pending:
                    await self.flush()
                if loop.time() >= next_renewal:
                    await self._renew()
                    next_renewal = loop.time() + renew_every
                heard = self._signals.cancels_heard()
                if not heard:
                    next_check = min(next_check, loop.time() + self._options.cancel_check_seconds)
                if self._check_now or loop.time() >= next_check:
                    self._check_now = False
                    await self._check_cancel()
                    next_check = loop.time() + (
                        self._options.cancel_safety_seconds
                        if heard
                        else self._options.cancel_check_seconds
                    )
                delay = self._options.retry_first_seconds
            except WriteProblem as exc:
                # The turn cannot go on as it was; it reads writer.problem to end right.
                self.problem = self.problem or exc
                self._interrupt()
                return
            except Exception as exc:
                if not is_transient(exc):
                    _log.error("turn %s: its timer failed (%s)", self._turn_id, _describe(exc))
                    self.problem = EventNotStored(_describe(exc))
                    self._interrupt()
                    return
                # A renewal or cancel check that failed: try again after a pause. A flush
                # retries by itself.
                _log.warning(
                    "turn %s: the database is unavailable (%s); renewing again in %.2fs",
                    self._turn_id,
                    _describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._options.retry_max_seconds)

    async def _renew(self) -> None:
        async with self._lock:
            if self.ended or self.lost:
                return
            lease = utcnow() + timedelta(seconds=self._options.lease_seconds)
            async with bounded(self._options.call_seconds), self._unit_of_work(write=True) as uow:
                renewed = await log.renew(
                    uow, self._tenant_id, self._session_id, self._turn_id, lease
                )
                await uow.commit()
            if not renewed:
                lost = TurnLost(
                    f"turn {self._turn_id} was failed as abandoned while this replica could "
                    "not renew its lease"
                )
                _log.warning("%s; it stops", lost)
                raise lost
            self._signals.hub.renewed(self._key, self._turn_id, lease)

    async def _check_cancel(self) -> None:
        async with bounded(self._options.call_seconds), self._unit_of_work() as uow:
            requested = await uow.turns.cancel_requested(
                self._tenant_id, self._session_id, self._turn_id
            )
        if requested and not self.ended:
            self._interrupt()
