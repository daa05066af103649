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
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from session_service.ports import SessionUoW, SessionUoWFactory
from session_service.sessions.model import Session
from session_service.sessions.service import session_not_found
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


@dataclass(frozen=True)
class _Started:
    """A turn accepted and committed, and the events that committed it."""

    job: TurnJob
    events: Sequence[Event]
    lease_expires: datetime


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


async def _check_turn_limits(
    uow: SessionUoW, tenant_id: str, quotas: Quotas, now: datetime
) -> None:
    """The tenant's concurrent-turn quota, then its SendMessage rate; under its lock."""
    if quotas.concurrent_turns:
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
    ) -> Accepted:
        """Accepts a user message and starts its turn (or finds the turn request_id started)."""
        if request_id:
            check_request_id(request_id)
            earlier = await self._by_request(tenant_id, session_id, request_id)
            if earlier is not None:
                return await self._replay(tenant_id, session_id, earlier, content)
        check_content(content)
        try:
            job = await self._accept(tenant_id, session_id, content, request_id, turn_context)
        except AlreadyExists:
            job = None
        if not isinstance(job, _Started):
            # A concurrent retry with the same request_id won; attach to its turn.
            earlier = job or await self._by_request(tenant_id, session_id, request_id)
            assert earlier is not None
            return await self._replay(tenant_id, session_id, earlier, content)
        self._signals.hub.publish(log_key(tenant_id, session_id), job.events, job.lease_expires)
        self._runner.start(job.job)
        return Accepted(job.job.turn_id, job.job.last_sequence - 1)

    async def _replay(
        self, tenant_id: str, session_id: str, earlier: Turn, content: str
    ) -> Accepted:
        """The turn a retry re-attaches to, if the retry carries the same message."""
        async with self._unit_of_work() as uow:
            started = await uow.events.after(tenant_id, session_id, earlier.first_sequence - 1, 1)
        first = started[0].body if started else None
        sent = first.user_message.content if isinstance(first, TurnStarted) else None
        if sent is not None and sent != content:
            # A reused key with another message is a client bug; running the first turn's
            # stream for it would answer a question that was not asked.
            raise InvalidArgument(
                f"request_id {earlier.request_id!r} was already used for a different message "
                f"(turn {earlier.turn_id}).",
                reason="REQUEST_ID_REUSED",
                metadata={"turn_id": earlier.turn_id},
                violations=[FieldViolation("request_id", "already used with different content")],
            )
        return Accepted(earlier.turn_id, earlier.first_sequence - 1)

    async def _by_request(self, tenant_id: str, session_id: str, request_id: str) -> Turn | None:
        async with self._unit_of_work() as uow:
            return await uow.turns.by_request(tenant_id, session_id, request_id)

    async def _accept(
        self,
        tenant_id: str,
        session_id: str,
        content: str,
        request_id: str,
        turn_context: Mapping[str, Any] | None,
    ) -> _Started | Turn:
        turn_id = uuid.uuid4().hex
        quotas = self._options.policies(tenant_id).quotas
        async with self._unit_of_work(write=True) as uow:
            if quotas.concurrent_turns or quotas.send_messages_per_minute:
                # Taken before the session's row lock, always in that order, so two accepts
                # cannot wait on each other.
                await uow.sessions.lock_tenant(tenant_id, "turns")
            session = await uow.sessions.get(tenant_id, session_id, for_update=True)
            if session is None:
                raise session_not_found(session_id)
            if request_id:
                # Checked again under the session's lock: a retry that raced the first try.
                earlier = await uow.turns.by_request(tenant_id, session_id, request_id)
                if earlier is not None:
                    return earlier
            session, reaped = await self._reap_abandoned(uow, tenant_id, session)
            now = utcnow()
            lease = now + timedelta(seconds=self._options.lease_seconds)
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
            turn_context=dict(turn_context or {}),
            agent=session.agent,
            parent_session_id=session.parent_session_id,
        )
        return _Started(job, [*([reaped] if reaped else []), begun.event], lease)

    async def events(
        self,
        tenant_id: str,
        session_id: str,
        after_sequence: int,
        *,
        follow: bool = False,
        turn_id: str = "",
    ) -> AsyncIterator[Event]:
        """Stored events after after_sequence, then live ones.

        With turn_id: until that turn's final event. Without: until no turn runs (or, with
        follow, until the caller leaves).
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
        self.open_streams += 1
        feed = self._signals.hub.attach(log_key(tenant_id, session_id))
        try:
            async with contextlib.aclosing(
                self._follow(feed, tenant_id, session_id, after_sequence, follow, turn_id)
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
            if not await feed.wait(self._patience(feed)):
                self._timed_out(feed)

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
            # The stored log has a gap, which only a database that lost commits leaves: do
            # not spin on it.
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
            session = await uow.sessions.get(tenant_id, session_id, for_update=True)
            if session is None:
                raise session_not_found(session_id)
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
                now = utcnow()
                await uow.approvals.close_turn(tenant_id, session_id, turn_id, now)
                session, ended = await log.end_with(
                    uow,
                    tenant_id,
                    session,
                    TurnCancelled(reason="cancelled", partial_message=None),
                    TurnStatus.CANCELLED,
                    now=now,
                    origin=self._signals.origin,
                )
                await uow.commit()
                self._publish(tenant_id, session_id, ended)
                return turn_id
            await log.request_cancel(uow, tenant_id, session_id, turn_id)
            await uow.commit()
        if reaped is not None:
            self._publish(tenant_id, session_id, reaped)
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
            session = await uow.sessions.get(tenant_id, session_id, for_update=True)
            if session is None:
                raise session_not_found(session_id)
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
            session = await uow.sessions.get(tenant_id, session_id)
            if session is None:
                raise session_not_found(session_id)
            expired = await lease_expired(uow, tenant_id, session)
        if expired and not self._runner.runs(session.active_turn_id):
            session = await self.reap(tenant_id, session_id)
        return session

    async def reap(self, tenant_id: str, session_id: str) -> Session:
        """Fails the session's running turn if its runner stopped renewing the lease."""
        async with self._unit_of_work(write=True) as uow:
            session = await uow.sessions.get(tenant_id, session_id, for_update=True)
            if session is None:
                raise session_not_found(session_id)
            reaped, event = await self._reap_abandoned(uow, tenant_id, session)
            await uow.commit()
        if event is not None:
            self._publish(tenant_id, session_id, event)
        return reaped

    def _publish(self, tenant_id: str, session_id: str, event: Event) -> None:
        self._signals.hub.publish(log_key(tenant_id, session_id), [event])

    async def _reap_abandoned(
        self, uow: SessionUoW, tenant_id: str, session: Session, *, force: bool = False
    ) -> tuple[Session, Event | None]:
        """Ends a turn whose lease ran out (or, with force, any running turn) with TurnFailed.

        The caller holds the session's row lock, commits, and then publishes the event.
        """
        return await fail_abandoned(
            uow,
            tenant_id,
            session,
            force=force,
            runs_here=self._runner.runs,
            origin=self._signals.origin,
        )

    async def recover_orphans(self) -> int:
        """Fails every running turn at start-up (single-process SQLite: their runner is gone)."""
        async with self._unit_of_work() as uow:
            running = await uow.turns.running()
        for tenant_id, turn in running:
            async with self._unit_of_work(write=True) as uow:
                session = await uow.sessions.get(tenant_id, turn.session_id, for_update=True)
                if session is not None and session.active_turn_id == turn.turn_id:
                    await self._reap_abandoned(uow, tenant_id, session, force=True)
                else:
                    await log.close_stray(uow, tenant_id, turn.session_id, turn.turn_id)
                await uow.commit()
        return len(running)
