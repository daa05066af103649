"""The turn use cases: SendMessage, StreamEvents and CancelTurn.

Followers of a session's log on this replica share one feed (see `hub`): what this replica
commits reaches them from memory, what other replicas commit is read once per wake-up for
all of them, and a follower that is up to date costs nothing until something happens. While
a turn runs, followers also wake when its lease should have been renewed; if it was not,
they fail the turn as abandoned, so every follower gets a final event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from session_service.ports import SessionUoW, SessionUoWFactory
from session_service.sessions.model import Session
from session_service.sessions.service import visible_session
from session_service.turns import log
from session_service.turns.engine import TurnJob
from session_service.turns.hub import SessionFeed
from session_service.turns.log import NO_LEASE
from session_service.turns.model import (
    ApprovalStatus,
    Event,
    Turn,
    TurnCancelled,
    TurnStarted,
    TurnStatus,
)
from session_service.turns.queue import (
    DEFAULT_MAX_QUEUED,
    IfBusy,
    QueuedTurn,
    check_room,
    place,
    turn_dropped,
    turns_ahead,
)
from session_service.turns.reaping import fail_abandoned, lease_expired
from session_service.turns.signals import TurnSignals, log_key
from session_service.turns.writer import bounded
from shared.clock import utcnow
from shared.db.faults import is_transient
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PreconditionViolation,
    Unavailable,
)
from shared.idempotency import check_request_id
from shared.quotas import PolicyLookup, Quotas, check_count, rate_limited, take_token, unlimited

_log = logging.getLogger(__name__)

MAX_CONTENT_CHARS = 256 * 1024
MAX_REASON_CHARS = 4096
READ_BATCH = 500


SEND_MESSAGE_BUCKET = "send_message"


@dataclass(frozen=True)
class TurnOptions:
    """Tunables of the turn use cases."""

    # An idle follower looks at the database this rarely, for what wakes no one (a deleted
    # session); everything else wakes it.
    follow_poll_seconds: float = 30.0
    # The lease a new turn starts with (its runner renews it).
    lease_seconds: float = 15.0
    # Followers check a turn this long after its lease should have been renewed.
    lease_grace_seconds: float = 0.25
    # Pause before a follower reads again after the database failed it.
    read_retry_seconds: float = 0.25
    # Longest a follower's read may take before it counts as failed and is tried again.
    read_seconds: float = 5.0
    # Each tenant's concurrent-turn quota and SendMessage rate.
    policies: PolicyLookup = unlimited
    # Turns a session may hold queued behind its active one (TANDEM_TURN_QUEUE_MAX).
    max_queued_turns: int = DEFAULT_MAX_QUEUED


@dataclass(frozen=True)
class _Started:
    """A turn accepted and committed, and the events that committed it."""

    job: TurnJob
    events: Sequence[Event]
    lease_expires: datetime


@dataclass(frozen=True)
class _Queued:
    """A turn stored in its session's queue, and what the same transaction ended."""

    turn_id: str
    ahead: int
    after_sequence: int
    settled: tuple[log.Written, ...] = ()
    # The running turn the queued one interrupts, to stop here if it runs here.
    interrupts: str = ""


@dataclass(frozen=True)
class _Waiting:
    """A retried SendMessage whose turn still waits in the queue."""

    entry: QueuedTurn
    ahead: int
    after_sequence: int


@dataclass(frozen=True)
class Decided:
    """A decision on a waiting tool call: its turn, whether it resumed, what still waits."""

    turn_id: str
    resumed: bool
    pending: tuple[str, ...]


def _not_waiting(
    tool_call_id: str, message: str, reason: str = "APPROVAL_NOT_PENDING"
) -> Exception:
    return FailedPrecondition(
        message,
        reason=reason,
        violations=[PreconditionViolation(reason, f"tool_calls/{tool_call_id}", message)],
    )


def check_content(content: str) -> None:
    """Refuses a user message a turn cannot be started with: empty, or too long."""
    if not content.strip():
        raise InvalidArgument(
            "content must not be empty.",
            reason="CONTENT_REQUIRED",
            violations=[FieldViolation("content", "is required")],
        )
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidArgument(
            f"content is longer than {MAX_CONTENT_CHARS} characters.",
            reason="CONTENT_TOO_LONG",
            violations=[FieldViolation("content", f"at most {MAX_CONTENT_CHARS} characters")],
        )


@dataclass(frozen=True)
class Accepted:
    """A SendMessage that started (or re-attached to) a turn."""

    turn_id: str
    after_sequence: int  # stream this turn's events after this sequence
    # Queued behind the session's active turn: how many turns run before it (0: it runs).
    # Its stream opens with TurnQueued and carries only its own turn's events.
    queued_ahead: int = 0


async def _check_turn_limits(
    uow: SessionUoW, tenant_id: str, quotas: Quotas, now: datetime, *, starts: bool = True
) -> None:
    """The tenant's concurrent-turn quota (unless the turn only queues: it takes the slot
    of the turn it follows), then its SendMessage rate; under its lock."""
    if quotas.concurrent_turns and starts:
        running = await uow.turns.count_running(tenant_id, now)
        check_count(
            tenant_id,
            "concurrent_turns",
            running,
            quotas.concurrent_turns,
            "wait for a turn to finish, or cancel one.",
        )
    if quotas.send_messages_per_minute:
        bucket, wait = take_token(
            await uow.rates.get(tenant_id, SEND_MESSAGE_BUCKET),
            now.timestamp(),
            quotas.send_messages_per_minute,
            quotas.send_message_burst,
        )
        if wait > 0:
            rate_limited(tenant_id, "send_messages", quotas.send_messages_per_minute, wait)
        await uow.rates.put(tenant_id, SEND_MESSAGE_BUCKET, bucket)


class RunsTurns(Protocol):
    """Runs accepted turns in the background (`engine.TurnRunner`)."""

    def start(self, job: TurnJob) -> None:
        """Runs job in the background; it outlives the RPC that started it."""

    def runs(self, turn_id: str) -> bool:
        """Whether the turn runs in this process."""

    def cancel_local(self, turn_id: str) -> bool:
        """Cancels the turn if it runs here; True when it did."""


class TurnService:
    """Starts, follows and cancels turns."""

    def __init__(
        self,
        unit_of_work: SessionUoWFactory,
        runner: RunsTurns,
        signals: TurnSignals,
        options: TurnOptions | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._runner = runner
        self._signals = signals
        self._options = options or TurnOptions()
        self._draining = False
        # Event streams (SendMessage and StreamEvents) open on this replica, for metrics.
        self.open_streams = 0

    async def _end_waiting(
        self, uow: SessionUoW, tenant_id: str, session: Session, now: datetime
    ) -> log.Written:
        """Cancels the session's turn that waits for approvals, and closes what it waited on
        (the caller holds the session's row lock, commits, then settles what was written)."""
        await uow.approvals.close_turn(tenant_id, session.session_id, session.active_turn_id, now)
        return await log.end_turn(
            uow,
            tenant_id,
            session,
            TurnCancelled(reason="cancelled", partial_message=None),
            TurnStatus.CANCELLED,
            now=now,
            origin=self._signals.origin,
            next_lease_seconds=self._options.lease_seconds,
        )

    def start_queued(self, follows: log.NextTurn) -> None:
        """Runs a queued turn this replica began (in the transaction that ended the one
        before it), as a freshly accepted turn runs."""
        self._runner.start(TurnJob.after(follows))

    def _settle(self, tenant_id: str, session_id: str, written: log.Written | None) -> None:
        """After commit: hands what an ending wrote to this replica's followers, and runs
        the queued turn it began, if any."""
        if written is None:
            return
        self._signals.hub.publish(
            log_key(tenant_id, session_id), written.events, written.lease_expires
        )
        if written.next is not None:
            self.start_queued(written.next)

    def drain(self) -> None:
        """Ends every event stream so its client resumes on another replica."""
        self._draining = True
        self._signals.hub.wake_all(dirty=False)

    async def send(
        self,
        tenant_id: str,
        session_id: str,
        content: str,
        *,
        request_id: str = "",
        turn_context: Mapping[str, Any] | None = None,
        if_busy: IfBusy = IfBusy.REJECT,
    ) -> Accepted:
        """Accepts a user message and starts its turn (or finds the turn request_id started).

        While the session runs a turn, if_busy says what happens: refused (REJECT), or the
        turn is queued after the others (ENQUEUE) or before them, the running turn asked to
        stop (INTERRUPT, ROLLBACK); see `queue`.
        """
        if request_id:
            check_request_id(request_id)
            earlier = await self._by_request(tenant_id, session_id, request_id)
            if earlier is not None:
                return await self._replay(tenant_id, session_id, earlier, content)
        check_content(content)
        try:
            job = await self._accept(
                tenant_id, session_id, content, request_id, turn_context, if_busy
            )
        except AlreadyExists:
            job = None
        if isinstance(job, _Queued):
            for written in job.settled:
                self._settle(tenant_id, session_id, written)
            if job.interrupts:
                self._runner.cancel_local(job.interrupts)
            return Accepted(job.turn_id, job.after_sequence, queued_ahead=job.ahead)
        if not isinstance(job, _Started):
            # A concurrent retry with the same request_id won; attach to its turn.
            earlier = job or await self._by_request(tenant_id, session_id, request_id)
            assert earlier is not None
            return await self._replay(tenant_id, session_id, earlier, content)
        self._signals.hub.publish(log_key(tenant_id, session_id), job.events, job.lease_expires)
        self._runner.start(job.job)
        return Accepted(job.job.turn_id, job.job.last_sequence - 1)

    async def _replay(
        self, tenant_id: str, session_id: str, earlier: Turn | _Waiting, content: str
    ) -> Accepted:
        """The turn a retry re-attaches to, if the retry carries the same message."""
        if isinstance(earlier, _Waiting):
            entry = earlier.entry
            if entry.content != content:
                raise _reused(entry.request_id, entry.turn_id)
            return Accepted(entry.turn_id, earlier.after_sequence, queued_ahead=earlier.ahead)
        async with self._unit_of_work() as uow:
            started = await uow.events.after(tenant_id, session_id, earlier.first_sequence - 1, 1)
        first = started[0].body if started else None
        sent = first.user_message.content if isinstance(first, TurnStarted) else None
        if sent is not None and sent != content:
            raise _reused(earlier.request_id or "", earlier.turn_id)
        return Accepted(earlier.turn_id, earlier.first_sequence - 1)

    async def _by_request(
        self, tenant_id: str, session_id: str, request_id: str
    ) -> Turn | _Waiting | None:
        async with self._unit_of_work() as uow:
            # A retry re-attaches to its turn only if the caller may see the session.
            session = await visible_session(uow, tenant_id, session_id)
            return await _requested(uow, tenant_id, session, request_id)

    async def _enqueue(
        self,
        uow: SessionUoW,
        tenant_id: str,
        session: Session,
        entry: QueuedTurn,
        if_busy: IfBusy,
        quotas: Quotas,
        now: datetime,
    ) -> _Queued | log.Written:
        """Queues entry behind the session's active turn (under its row lock); INTERRUPT and
        ROLLBACK put it first and stop that turn. A turn that only waited for approvals ends
        at once, and the returned Written has entry begun in its place."""
        session_id = session.session_id
        entries = await uow.queue.entries(tenant_id, session_id)
        check_room(session_id, len(entries), self._options.max_queued_turns)
        await _check_turn_limits(uow, tenant_id, quotas, now, starts=False)
        entry = dataclasses.replace(entry, position=place(entries, if_busy))
        await uow.queue.add(tenant_id, entry)
        session = session.turn_queued(now)
        await uow.sessions.save(tenant_id, session)
        ahead = turns_ahead([*entries, entry], entry.turn_id)
        if if_busy is IfBusy.ENQUEUE:
            return _Queued(entry.turn_id, ahead, session.last_sequence)
        active = session.active_turn_id
        current = await uow.turns.get(tenant_id, session_id, active)
        if current is not None and current.status is TurnStatus.WAITING:
            # Nothing runs a paused turn: it ends here, as CancelTurn ends it.
            return await self._end_waiting(uow, tenant_id, session, now)
        await log.request_cancel(uow, tenant_id, session_id, active)
        return _Queued(entry.turn_id, ahead, session.last_sequence, interrupts=active)

    async def _accept(
        self,
        tenant_id: str,
        session_id: str,
        content: str,
        request_id: str,
        turn_context: Mapping[str, Any] | None,
        if_busy: IfBusy = IfBusy.REJECT,
    ) -> _Started | _Queued | Turn | _Waiting:
        turn_id = uuid.uuid4().hex
        quotas = self._options.policies(tenant_id).quotas
        async with self._unit_of_work(write=True) as uow:
            if quotas.concurrent_turns or quotas.send_messages_per_minute:
                # Taken before the session's row lock, always in that order, so two accepts
                # cannot wait on each other.
                await uow.sessions.lock_tenant(tenant_id, "turns")
            session = await visible_session(uow, tenant_id, session_id, for_update=True)
            if request_id:
                # Checked again under the session's lock: a retry that raced the first try.
                earlier = await _requested(uow, tenant_id, session, request_id)
                if earlier is not None:
                    return earlier
            session, reaped = await self._reap_abandoned(uow, tenant_id, session)
            now = utcnow()
            lease = now + timedelta(seconds=self._options.lease_seconds)
            if session.active_turn_id and if_busy is not IfBusy.REJECT:
                queued = await self._enqueue(
                    uow,
                    tenant_id,
                    session,
                    QueuedTurn(
                        session_id=session_id,
                        position=0,
                        turn_id=turn_id,
                        message_id=uuid.uuid4().hex,
                        request_id=request_id,
                        content=content,
                        create_time=now,
                        turn_context=dict(turn_context or {}),
                        rolls_back=session.active_turn_id if if_busy is IfBusy.ROLLBACK else "",
                    ),
                    if_busy,
                    quotas,
                    now,
                )
                await uow.commit()
                if isinstance(queued, log.Written):
                    # The interrupted turn only waited for approvals: it ended here, and this
                    # one began in its place.
                    assert queued.next is not None
                    events = [*(reaped.events if reaped else ()), *queued.events]
                    return _Started(TurnJob.after(queued.next), events, queued.next.lease_expires)
                return dataclasses.replace(queued, settled=(reaped,) if reaped else ())
            # Before the quota and rate are spent on it.
            session.check_turn_can_begin()
            await _check_turn_limits(uow, tenant_id, quotas, now)
            begun = await log.begin(
                uow,
                tenant_id,
                session,
                turn_id=turn_id,
                message_id=uuid.uuid4().hex,
                content=content,
                request_id=request_id,
                lease_expires=lease,
                now=now,
                origin=self._signals.origin,
            )
            await uow.commit()
        job = TurnJob(
            tenant_id=tenant_id,
            session_id=session_id,
            turn_id=turn_id,
            config_id=session.config_id,
            config_revision=session.config_revision,
            last_sequence=begun.event.sequence,
            message_count=begun.user_message.sequence,
            overrides=session.overrides,
            turn_context=dict(turn_context or {}),
            agent=session.agent,
            parent_session_id=session.parent_session_id,
        )
        return _Started(job, [*(reaped.events if reaped else ()), begun.event], lease)

    async def events(
        self,
        tenant_id: str,
        session_id: str,
        after_sequence: int,
        *,
        follow: bool = False,
        turn_id: str = "",
        only_turn: bool = False,
    ) -> AsyncIterator[Event]:
        """Stored events after after_sequence, then live ones.

        With turn_id: until that turn's final event (with only_turn, that turn's events
        only: a queued turn's stream, ABORTED TURN_DROPPED if it will never run). Without:
        until no turn runs (or, with follow, until the caller leaves).
        """
        if after_sequence < 0:
            raise InvalidArgument(
                "after_sequence must not be negative.",
                violations=[FieldViolation("after_sequence", "must be >= 0")],
            )
        session = await self._current(tenant_id, session_id)
        if after_sequence > session.last_sequence:
            raise OutOfRange(
                f"after_sequence {after_sequence} is past the session's last event "
                f"({session.last_sequence}).",
                reason="SEQUENCE_IN_FUTURE",
                metadata={"last_sequence": str(session.last_sequence)},
                violations=[
                    FieldViolation("after_sequence", f"must be <= {session.last_sequence}")
                ],
            )
        if after_sequence < session.compacted_through:
            raise compacted(session, after_sequence)
        self.open_streams += 1
        feed = self._signals.hub.attach(log_key(tenant_id, session_id))
        try:
            async with contextlib.aclosing(
                self._follow(
                    feed,
                    tenant_id,
                    session_id,
                    after_sequence,
                    follow,
                    turn_id,
                    only_turn=only_turn and bool(turn_id),
                )
            ) as events:
                async for event in events:
                    yield event
        finally:
            self.open_streams -= 1
            self._signals.hub.detach(feed)

    async def _follow(
        self,
        feed: SessionFeed,
        tenant_id: str,
        session_id: str,
        cursor: int,
        follow: bool,
        turn_id: str,
        *,
        only_turn: bool = False,
    ) -> AsyncGenerator[Event, None]:
        while True:
            if self._draining:
                raise Unavailable(
                    "This replica is shutting down; resume with StreamEvents after_sequence "
                    f"{cursor} on another replica.",
                    reason="SERVER_DRAINING",
                    metadata={"last_sequence": str(cursor), "session_id": session_id},
                )
            if feed.gone:
                if only_turn:
                    raise turn_dropped(session_id, turn_id)
                return  # the session was deleted
            held = feed.since(cursor)
            if held is None:
                # Further behind than the feed remembers: this follower reads for itself.
                held = await self._catch_up(tenant_id, session_id, cursor)
                if not held:
                    # Nothing where the feed said there was more: the session may be gone.
                    if not feed.dirty:
                        feed.mark_dirty()
                    await self._refresh(feed, tenant_id, session_id, cursor)
                    continue
            if held:
                for event in held:
                    if event.sequence != cursor + 1:
                        # Only retention leaves holes, and it compacted under this reader.
                        raise compacted(await self._current(tenant_id, session_id), cursor)
                    if only_turn and event.turn_id != turn_id:
                        cursor = event.sequence  # the turns ahead of a queued one
                        continue
                    yield event
                    cursor = event.sequence
                    if turn_id and event.turn_id == turn_id and event.terminal:
                        return
                continue
            if feed.stale or cursor > feed.last_sequence:
                await self._refresh(feed, tenant_id, session_id, cursor)
                continue
            # Up to date with everything committed.
            if not feed.active_turn_id and not follow and not turn_id:
                return
            # Queued turns wait only behind an active one; with none, this one either began
            # (the feed will show it) or was dropped.
            if (
                only_turn
                and not feed.active_turn_id
                and not await self._still_coming(tenant_id, session_id, turn_id)
            ):
                raise turn_dropped(session_id, turn_id)
            if not await feed.wait(self._patience(feed)):
                self._timed_out(feed)

    async def _still_coming(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        """Whether turn_id began or still waits in the session's queue."""
        async with bounded(self._options.read_seconds), self._unit_of_work() as uow:
            if await uow.turns.get(tenant_id, session_id, turn_id) is not None:
                return True
            entries = await uow.queue.entries(tenant_id, session_id)
        return any(entry.turn_id == turn_id for entry in entries)

    def _patience(self, feed: SessionFeed) -> float:
        """How long a follower that is up to date sleeps before it looks for itself."""
        seconds = self._options.follow_poll_seconds
        if feed.active_turn_id:
            if feed.lease_expires is None:
                return min(seconds, self._options.lease_seconds)
            left = (feed.lease_expires - utcnow()).total_seconds()
            seconds = min(seconds, max(left, 0.0) + self._options.lease_grace_seconds)
        return seconds

    def _timed_out(self, feed: SessionFeed) -> None:
        if feed.stale:
            return  # another follower of the feed already asked for a read
        if feed.active_turn_id and feed.lease_expires is not None and feed.lease_expires > utcnow():
            return  # renewed while this follower slept
        feed.mark_dirty()

    async def _catch_up(self, tenant_id: str, session_id: str, cursor: int) -> list[Event]:
        """Stored events after cursor, for one follower; empty after a transient failure."""
        try:
            async with bounded(self._options.read_seconds), self._unit_of_work() as uow:
                return await uow.events.after(tenant_id, session_id, cursor, READ_BATCH)
        except Exception as exc:
            if not is_transient(exc):
                raise
            _log.warning("reading session events failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(self._options.read_retry_seconds)
            return []

    async def _refresh(
        self, feed: SessionFeed, tenant_id: str, session_id: str, cursor: int
    ) -> None:
        """Reads what the feed lacks, once for all its followers; reaps an expired turn."""
        loop = asyncio.get_running_loop()
        if feed.retry_at > loop.time():
            await feed.wait(feed.retry_at - loop.time())
            return
        seen = feed.version
        async with feed.refreshing:
            if feed.version != seen:
                return  # changed (or read) while this follower queued; look again
            try:
                await self._read_into(feed, tenant_id, session_id, cursor)
            finally:
                feed.read_done()

    async def _read_into(
        self, feed: SessionFeed, tenant_id: str, session_id: str, cursor: int
    ) -> None:
        # Only new events when other replicas announced them; the session and its turn too
        # when the feed cannot tell what changed (first load, reconnect, a lease to check).
        mark = feed.refresh_mark()
        full = feed.dirty or not feed.loaded
        start = feed.last_sequence if feed.loaded else cursor
        session: Session | None = None
        turn: Turn | None = None
        try:
            async with bounded(self._options.read_seconds), self._unit_of_work() as uow:
                events = await uow.events.after(tenant_id, session_id, start, READ_BATCH)
                if full:
                    # Read after the events, so it is never older than they are.
                    session = await uow.sessions.get(tenant_id, session_id)
                    if session is not None and session.active_turn_id:
                        turn = await uow.turns.get(tenant_id, session_id, session.active_turn_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = min(self._options.read_retry_seconds * 2 ** min(feed.failures, 4), 5.0)
            _log.warning(
                "reading session events failed (%s); retrying in %.2fs", type(exc).__name__, delay
            )
            feed.failed(asyncio.get_running_loop().time() + delay)
            return
        followed_on = feed.extend(events) if feed.loaded else feed.load(start, events)
        if not followed_on:
            # Event retention leaves holes behind the session's compacted mark: a follower
            # reading from there gets OUT_OF_RANGE, as one asking for it at the start does.
            current = await self._current(tenant_id, session_id)
            if start < current.compacted_through:
                raise compacted(current, start)
            # Any other gap only a database that lost commits leaves: do not spin on it.
            _log.error("the event log of a session has a gap after sequence %d", start)
            feed.failed(asyncio.get_running_loop().time() + 5.0)
            return
        if not full:
            if not events:
                # Announced but not there (a stray payload): read fully rather than spin.
                feed.mark_dirty()
            return
        if session is None:
            feed.close()
            return
        if len(events) == READ_BATCH or session.last_sequence > feed.last_sequence:
            feed.want(session.last_sequence)  # more was committed meanwhile: read on
            return
        feed.set_turn(session.active_turn_id, turn.lease_expires if turn else None)
        feed.refreshed(mark)
        expired = turn is None or turn.status is not TurnStatus.RUNNING
        expired = expired or (turn is not None and turn.lease_expires <= utcnow())
        if session.active_turn_id and expired and not self._runner.runs(session.active_turn_id):
            try:
                async with bounded(self._options.read_seconds):
                    await self.reap(tenant_id, session_id)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # A follower tries again after a pause.
                _log.warning("failing an abandoned turn failed (%s)", type(exc).__name__)
                feed.mark_dirty()
                feed.failed(asyncio.get_running_loop().time() + self._options.read_retry_seconds)

    async def cancel(self, tenant_id: str, session_id: str, turn_id: str) -> str:
        """Asks the running turn to stop, wherever it runs; returns its id."""
        async with self._unit_of_work(write=True) as uow:
            session = await visible_session(uow, tenant_id, session_id, for_update=True)
            session, reaped = await self._reap_abandoned(uow, tenant_id, session)
            if turn_id:
                turn = await uow.turns.get(tenant_id, session_id, turn_id)
                if turn is None:
                    raise NotFound(
                        f"Turn {turn_id!r} of session {session_id!r} does not exist.",
                        reason="TURN_NOT_FOUND",
                        resource_type="Turn",
                        resource_name=turn_id,
                    )
                if turn.status not in (TurnStatus.RUNNING, TurnStatus.WAITING):
                    return turn_id  # already over: cancelling again changes nothing
            elif not session.active_turn_id:
                raise FailedPrecondition(
                    f"Session {session_id!r} runs no turn.",
                    reason="NO_ACTIVE_TURN",
                    violations=[
                        PreconditionViolation(
                            "NO_ACTIVE_TURN", f"sessions/{session_id}", "no turn is running"
                        )
                    ],
                )
            else:
                turn_id = session.active_turn_id
            current = await uow.turns.get(tenant_id, session_id, turn_id)
            if current is not None and current.status is TurnStatus.WAITING:
                # Nothing runs a paused turn: it ends here, and what it waited on closes.
                ended = await self._end_waiting(uow, tenant_id, session, utcnow())
                await uow.commit()
                self._settle(tenant_id, session_id, reaped)
                self._settle(tenant_id, session_id, ended)
                return turn_id
            await log.request_cancel(uow, tenant_id, session_id, turn_id)
            await uow.commit()
        self._settle(tenant_id, session_id, reaped)
        self._runner.cancel_local(turn_id)
        return turn_id

    async def decide(
        self,
        tenant_id: str,
        session_id: str,
        tool_call_id: str,
        approved: bool,
        reason: str = "",
    ) -> Decided:
        """Approves or denies a tool call the session's waiting turn paused for; the last
        decision it waits for resumes the turn here. FAILED_PRECONDITION when that call
        does not wait (no waiting turn, an unknown call, or one decided already)."""
        if not tool_call_id:
            raise InvalidArgument(
                "tool_call_id is required.",
                reason="TOOL_CALL_ID_REQUIRED",
                violations=[FieldViolation("tool_call_id", "is required")],
            )
        if len(reason) > MAX_REASON_CHARS:
            raise InvalidArgument(
                f"reason is longer than {MAX_REASON_CHARS} characters.",
                reason="REASON_TOO_LONG",
                violations=[FieldViolation("reason", f"at most {MAX_REASON_CHARS} characters")],
            )
        now = utcnow()
        async with self._unit_of_work(write=True) as uow:
            session = await visible_session(uow, tenant_id, session_id, for_update=True)
            turn_id = session.active_turn_id
            turn = await uow.turns.get(tenant_id, session_id, turn_id) if turn_id else None
            if turn is None or turn.status is not TurnStatus.WAITING:
                raise _not_waiting(
                    tool_call_id, f"Session {session_id!r} has no turn waiting for approval."
                )
            approvals = await uow.approvals.of_turn(tenant_id, session_id, turn_id)
            target = next((a for a in approvals if a.tool_call_id == tool_call_id), None)
            if target is None:
                raise _not_waiting(
                    tool_call_id,
                    f"Turn {turn_id!r} waits for no approval of tool call {tool_call_id!r}.",
                )
            if target.status is not ApprovalStatus.PENDING:
                raise _not_waiting(
                    tool_call_id,
                    f"Tool call {tool_call_id!r} was {target.status.value.lower()} already.",
                    "APPROVAL_ALREADY_DECIDED",
                )
            session, event = await log.decide(
                uow,
                tenant_id,
                session,
                target,
                approved,
                reason,
                now=now,
                origin=self._signals.origin,
            )
            pending = [
                a.tool_call_id
                for a in approvals
                if a.status is ApprovalStatus.PENDING and a.tool_call_id != tool_call_id
            ]
            job = None
            lease = None
            if not pending:
                lease = now + timedelta(seconds=self._options.lease_seconds)
                await log.resume(uow, tenant_id, session, lease_expires=lease)
                job = TurnJob(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    turn_id=turn_id,
                    config_id=session.config_id,
                    config_revision=session.config_revision,
                    last_sequence=session.last_sequence,
                    message_count=session.message_count,
                    overrides=session.overrides,
                    agent=session.agent,
                    parent_session_id=session.parent_session_id,
                    resume=True,
                )
            await uow.commit()
        self._signals.hub.publish(log_key(tenant_id, session_id), [event], lease or NO_LEASE)
        if job is not None:
            self._runner.start(job)
        return Decided(turn_id, resumed=job is not None, pending=tuple(pending))

    async def next_approval_expiry(self) -> datetime | None:
        """When the first pending approval runs out of time, if any does."""
        async with self._unit_of_work() as uow:
            return await uow.approvals.next_expiry()

    async def expire_approvals(self, limit: int = 100) -> int:
        """Denies approvals whose time ran out (on any replica: the first to decide wins).

        Returns how many this call denied.
        """
        async with self._unit_of_work() as uow:
            expired = await uow.approvals.expired(utcnow(), limit)
        denied = 0
        for tenant_id, approval in expired:
            try:
                await self.decide(
                    tenant_id,
                    approval.session_id,
                    approval.tool_call_id,
                    False,
                    "Nobody approved the call in time.",
                )
            except (FailedPrecondition, NotFound):
                continue  # decided, cancelled or deleted meanwhile
            denied += 1
        return denied

    async def _current(self, tenant_id: str, session_id: str) -> Session:
        """The session, after failing its turn if that turn's lease ran out."""
        async with self._unit_of_work() as uow:
            session = await visible_session(uow, tenant_id, session_id)
            expired = await lease_expired(uow, tenant_id, session)
        if expired and not self._runner.runs(session.active_turn_id):
            session = await self.reap(tenant_id, session_id)
        return session

    async def reap(self, tenant_id: str, session_id: str) -> Session:
        """Fails the session's running turn if its runner stopped renewing the lease."""
        async with self._unit_of_work(write=True) as uow:
            session = await visible_session(uow, tenant_id, session_id, for_update=True)
            reaped, written = await self._reap_abandoned(uow, tenant_id, session)
            await uow.commit()
        self._settle(tenant_id, session_id, written)
        return reaped

    async def _reap_abandoned(
        self, uow: SessionUoW, tenant_id: str, session: Session, *, force: bool = False
    ) -> tuple[Session, log.Written | None]:
        """Ends a turn whose lease ran out (or, with force, any running turn) with TurnFailed.

        The caller holds the session's row lock, commits, and then settles what it wrote
        (`_settle`): a queued turn may have begun in its place.
        """
        return await fail_abandoned(
            uow,
            tenant_id,
            session,
            force=force,
            runs_here=self._runner.runs,
            origin=self._signals.origin,
            next_lease_seconds=self._options.lease_seconds,
        )

    async def recover_orphans(self) -> int:
        """Fails every running turn at start-up (single-process SQLite: their runner is gone)."""
        async with self._unit_of_work() as uow:
            running = await uow.turns.running()
        for tenant_id, turn in running:
            async with self._unit_of_work(write=True) as uow:
                session = await uow.sessions.get(tenant_id, turn.session_id, for_update=True)
                written: log.Written | None = None
                if session is not None and session.active_turn_id == turn.turn_id:
                    _, written = await self._reap_abandoned(uow, tenant_id, session, force=True)
                else:
                    await log.close_stray(uow, tenant_id, turn.session_id, turn.turn_id)
                await uow.commit()
            self._settle(tenant_id, turn.session_id, written)
        return len(running)


def compacted(session: Session, after_sequence: int) -> OutOfRange:
    """OUT_OF_RANGE for a replay from where retention removed events: where one can start."""
    first = session.compacted_through + 1
    return OutOfRange(
        f"Events of session {session.session_id!r} up to {session.compacted_through} were "
        f"compacted (their text is in the transcript, see ListMessages); replay from "
        f"after_sequence {session.compacted_through} or later.",
        reason="EVENTS_COMPACTED",
        metadata={
            "first_sequence": str(first),
            "compacted_through": str(session.compacted_through),
            "after_sequence": str(after_sequence),
        },
        violations=[FieldViolation("after_sequence", f"must be >= {session.compacted_through}")],
    )


async def _requested(
    uow: SessionUoW, tenant_id: str, session: Session, request_id: str
) -> Turn | _Waiting | None:
    """What request_id asked for in session: its turn, or its place in the queue.

    The session was read first: a turn that leaves the queue after it writes its TurnStarted
    after that session's last event, so a stream from there misses none of it.
    """
    turn = await uow.turns.by_request(tenant_id, session.session_id, request_id)
    if turn is not None:
        return turn
    entry = await uow.queue.by_request(tenant_id, session.session_id, request_id)
    if entry is None:
        return None
    entries = await uow.queue.entries(tenant_id, session.session_id)
    ahead = turns_ahead(entries, entry.turn_id) or 1
    return _Waiting(entry, ahead, session.last_sequence)


def _reused(request_id: str, turn_id: str) -> InvalidArgument:
    # A reused key with another message is a client bug; running the first turn's stream
    # for it would answer a question that was not asked.
    return InvalidArgument(
        f"request_id {request_id!r} was already used for a different message (turn {turn_id}).",
        reason="REQUEST_ID_REUSED",
        metadata={"turn_id": turn_id},
        violations=[FieldViolation("request_id", "already used with different content")],
    )
