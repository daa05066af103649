"""The turn log: the only writer of sessions' event logs, turn rows and leases.

Every change to a session's log happens here, inside a unit of work whose caller holds the
session's row lock and commits: a turn begins (its row, the user message, TurnStarted), a
running turn appends what it produced (and ends), a turn whose runner is gone is failed, a
lease is renewed, a cancel is requested. Each keeps the session row, the turn row and the log
in step, so a reader never sees one ahead of the others. The rules for when these happen live
with their callers (`service`, `writer`, `reaping`); how they are written lives here.

An append announces itself at commit (the repository sends its NOTIFY); origin names the
replica that hands the same events to its own followers from memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from session_service.ports import SessionUoW
from session_service.sessions.model import Message, Role, Session
from session_service.turns.model import (
    Approval,
    ApprovalDecided,
    ApprovalStatus,
    Event,
    EventBody,
    SessionCreated,
    SessionRewound,
    Turn,
    TurnCancelled,
    TurnStarted,
    TurnStatus,
    storable_body,
)
from session_service.turns.queue import QueuedTurn

# What a waiting turn's lease column holds: it has no lease, since nothing runs it.
NO_LEASE = datetime(9999, 1, 1, tzinfo=UTC)
# The lease a queued turn starts with when whoever begins it does not say.
NEXT_LEASE_SECONDS = 15.0
# TurnCancelled.reason of a turn a ROLLBACK stopped: its messages left the transcript.
ROLLED_BACK = "rolled back"


@dataclass(frozen=True)
class Begun:
    """A turn begun: the session running it and its first event."""

    session: Session
    event: Event
    user_message: Message


@dataclass(frozen=True)
class NextTurn:
    """A queued turn begun in the transaction that ended the one before it.

    It is leased to the replica that committed that transaction, which runs it next.
    """

    tenant_id: str
    session: Session
    turn_id: str
    last_sequence: int
    message_count: int
    lease_expires: datetime
    turn_context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """What a write of the running turn left: the session, every event stored (in order:
    the caller hands them to this replica's followers) and the queued turn begun after it."""

    session: Session
    events: tuple[Event, ...]
    next: NextTurn | None = None

    @property
    def lease_expires(self) -> datetime | None:
        """The lease of the turn the session runs after this write, if a new one began."""
        return self.next.lease_expires if self.next is not None else None


async def created(uow: SessionUoW, tenant_id: str, session: Session) -> Event:
    """Writes SessionCreated, event 1 of a session made by one-call chat, with the session.

    No one can follow a session before it exists, so no replica's followers wait for this
    one from memory (origin "").
    """
    event = Event(1, "", SessionCreated(session), session.create_time)
    await uow.events.append(tenant_id, session.session_id, [event], "")
    return event


async def begin(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    *,
    turn_id: str,
    message_id: str,
    content: str,
    request_id: str,
    lease_expires: datetime,
    now: datetime,
    origin: str,
    dequeued: bool = False,
) -> Begun:
    """Starts turn_id in session: its row, the user message and TurnStarted, one write.

    Refused (by the session) unless the session is ACTIVE and runs no turn. dequeued: the
    turn waited in the session's queue (its entry is the caller's to remove).
    """
    sequence = session.last_sequence + 1
    user = Message(
        message_id=message_id,
        role=Role.USER,
        content=content,
        sequence=session.message_count + 1,
        create_time=now,
        turn_id=turn_id,
    )
    running = session.turn_begun(turn_id, sequence, user.sequence, now, dequeued=dequeued)
    await uow.turns.insert(
        tenant_id,
        Turn(
            session_id=session.session_id,
            turn_id=turn_id,
            request_id=request_id,
            status=TurnStatus.RUNNING,
            first_sequence=sequence,
            last_sequence=sequence,
            cancel_requested=False,
            runner="",
            lease_expires=lease_expires,
            create_time=now,
        ),
    )
    await uow.messages.append(tenant_id, session.session_id, user)
    # Stored as it will be read back, since followers here are served this copy.
    started = Event(
        sequence,
        turn_id,
        storable_body(TurnStarted(user_message=user, request_id=request_id)),
        now,
    )
    await uow.events.append(tenant_id, session.session_id, [started], origin)
    await uow.sessions.save(tenant_id, running)
    return Begun(running, started, user)


async def write(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    events: Sequence[Event],
    messages: Sequence[Message],
    *,
    now: datetime,
    origin: str,
    lease_expires: datetime | None = None,
    end: TurnStatus | None = None,
    display_name: str = "",
    waiting: Sequence[Approval] = (),
    next_lease_seconds: float = NEXT_LEASE_SECONDS,
) -> Written:
    """Writes the running turn's events and transcript messages; with end, the turn ends.

    The caller checked that session still names the turn as active. Its lease moves to
    lease_expires when given. display_name names a session that has no name yet. With
    waiting, the turn pauses (WAITING, without a lease) on those approvals: it stays the
    session's active turn, and nothing runs it until they are decided.

    Every end of a turn comes through here, and begins the head of the session's queue in
    the same transaction (leased for next_lease_seconds to the caller, who runs it after
    commit); a turn a ROLLBACK stopped leaves the transcript first (`_end`).
    """
    turn_id = session.active_turn_id
    # The session row counts its queue, so a turn with none behind it reads nothing more.
    ending_with_queue = end is not None and session.queued_turns > 0
    queued = await uow.queue.entries(tenant_id, session.session_id) if ending_with_queue else []
    head = queued[0] if queued else None
    # Any entry, not only the head: an INTERRUPT sent after the ROLLBACK runs first, but
    # the rollback asked for still happens.
    rolled_back = any(entry.rolls_back == turn_id for entry in queued)
    if rolled_back:
        events = [_as_rolled_back(event) for event in events]
    for message in messages:
        await uow.messages.append(tenant_id, session.session_id, message)
    if events:
        await uow.events.append(tenant_id, session.session_id, events, origin)
    last = events[-1].sequence if events else session.last_sequence
    written = session.turn_written(
        last, len(messages), now, ended=end is not None, display_name=display_name
    )
    await uow.sessions.save(tenant_id, written)
    if waiting:
        await uow.approvals.add(tenant_id, waiting)
    await uow.turns.update(
        tenant_id,
        session.session_id,
        turn_id,
        last_sequence=last,
        status=TurnStatus.WAITING if waiting else end,
        end_time=now if end is not None else None,
        lease_expires=NO_LEASE if waiting else lease_expires,
    )
    if end is None:
        return Written(written, tuple(events))
    return await _end(
        uow,
        tenant_id,
        written,
        turn_id,
        list(events),
        head,
        rolled_back=rolled_back,
        now=now,
        origin=origin,
        next_lease_seconds=next_lease_seconds,
    )


def _as_rolled_back(event: Event) -> Event:
    if isinstance(event.body, TurnCancelled):
        return dataclasses.replace(event, body=dataclasses.replace(event.body, reason=ROLLED_BACK))
    return event


async def _end(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    turn_id: str,
    events: list[Event],
    head: QueuedTurn | None,
    *,
    rolled_back: bool,
    now: datetime,
    origin: str,
    next_lease_seconds: float,
) -> Written:
    """After turn_id ended in session: its rollback, if one was asked, then the next turn."""
    if rolled_back:
        session, cut = await _roll_back(uow, tenant_id, session, turn_id, now=now, origin=origin)
        if cut is not None:
            events.append(cut)
    if head is None:
        return Written(session, tuple(events))
    await uow.queue.remove(tenant_id, session.session_id, head.position)
    lease = now + timedelta(seconds=next_lease_seconds)
    begun = await begin(
        uow,
        tenant_id,
        session,
        turn_id=head.turn_id,
        message_id=head.message_id,
        content=head.content,
        request_id=head.request_id,
        lease_expires=lease,
        now=now,
        origin=origin,
        dequeued=True,
    )
    events.append(begun.event)
    follows = NextTurn(
        tenant_id=tenant_id,
        session=begun.session,
        turn_id=head.turn_id,
        last_sequence=begun.event.sequence,
        message_count=begun.user_message.sequence,
        lease_expires=lease,
        turn_context=dict(head.turn_context),
    )
    return Written(begun.session, tuple(events), follows)


async def _roll_back(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    turn_id: str,
    *,
    now: datetime,
    origin: str,
) -> tuple[Session, Event | None]:
    """Takes the ended turn's messages (its user message on) out of the transcript, and
    records the cut with SessionRewound; the log keeps what they said."""
    turn = await uow.turns.get(tenant_id, session.session_id, turn_id)
    started = (
        await uow.events.at(tenant_id, session.session_id, turn.first_sequence)
        if turn is not None
        else None
    )
    if started is None or not isinstance(started.body, TurnStarted):
        return session, None
    to_sequence = started.body.user_message.sequence - 1
    kept = (
        await uow.messages.at(tenant_id, session.session_id, to_sequence)
        if to_sequence > 0
        else None
    )
    # The turn has ended, so this is a rewind like any between turns.
    return await rewind(
        uow,
        tenant_id,
        session,
        to_sequence,
        kept.message_id if kept is not None else "",
        now=now,
        origin=origin,
    )


async def end_turn(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    body: EventBody,
    end: TurnStatus,
    *,
    now: datetime,
    origin: str,
    next_lease_seconds: float = NEXT_LEASE_SECONDS,
) -> Written:
    """Ends the session's running turn with one final event written for it (not by it),
    then begins the next queued turn (see `write`)."""
    event = Event(session.last_sequence + 1, session.active_turn_id, body, now)
    return await write(
        uow,
        tenant_id,
        session,
        [event],
        [],
        now=now,
        origin=origin,
        end=end,
        next_lease_seconds=next_lease_seconds,
    )


async def decide(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    approval: Approval,
    approved: bool,
    reason: str,
    *,
    now: datetime,
    origin: str,
) -> tuple[Session, Event]:
    """Records the decision on one call of the session's waiting turn, and ApprovalDecided."""
    status = ApprovalStatus.APPROVED if approved else ApprovalStatus.DENIED
    await uow.approvals.decide(
        tenant_id, session.session_id, approval.turn_id, approval.tool_call_id, status, reason, now
    )
    event = Event(
        session.last_sequence + 1,
        approval.turn_id,
        storable_body(ApprovalDecided(approval.tool_call_id, approved, reason)),
        now,
    )
    written = (await write(uow, tenant_id, session, [event], [], now=now, origin=origin)).session
    return written, event


async def rewind(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    to_sequence: int,
    to_message_id: str,
    *,
    now: datetime,
    origin: str,
) -> tuple[Session, Event]:
    """Cuts the transcript back to the message at to_sequence (to_message_id; none at 0) and
    records SessionRewound (no turn's): RewindSession, and a turn a ROLLBACK stopped.

    The caller holds the session's row lock and checked the cut; the session refuses it
    while a turn runs or once it ended. The removed messages stay in the log, in the events
    of the turns that wrote them.
    """
    event_sequence = session.last_sequence + 1
    rewound = session.rewound(to_sequence, event_sequence, now)
    removed = await uow.messages.remove_after(tenant_id, session.session_id, to_sequence)
    event = Event(
        event_sequence,
        "",
        SessionRewound(to_message_id, to_sequence, removed),
        now,
    )
    await uow.events.append(tenant_id, session.session_id, [event], origin)
    await uow.sessions.save(tenant_id, rewound)
    return rewound, event


async def resume(
    uow: SessionUoW, tenant_id: str, session: Session, *, lease_expires: datetime
) -> None:
    """Makes the session's waiting turn RUNNING again, leased to the caller's replica."""
    await uow.turns.update(
        tenant_id,
        session.session_id,
        session.active_turn_id,
        status=TurnStatus.RUNNING,
        lease_expires=lease_expires,
    )


async def close_stray(uow: SessionUoW, tenant_id: str, session_id: str, turn_id: str) -> None:
    """Marks FAILED a turn row left RUNNING that its session no longer names as active."""
    await uow.turns.update(tenant_id, session_id, turn_id, status=TurnStatus.FAILED)


async def renew(
    uow: SessionUoW, tenant_id: str, session_id: str, turn_id: str, lease_expires: datetime
) -> bool:
    """Extends a running turn's lease; False when the turn no longer runs."""
    return await uow.turns.renew(tenant_id, session_id, turn_id, lease_expires)


async def compact(uow: SessionUoW, tenant_id: str, session_id: str, through: int) -> int:
    """Removes the deltas of the finished turns up to through (event retention).

    It needs no row lock: it touches only finished turns' events and a mark that only grows.
    """
    return await uow.events.compact(tenant_id, session_id, through)


async def request_cancel(uow: SessionUoW, tenant_id: str, session_id: str, turn_id: str) -> None:
    """Flags the turn to stop; at commit every replica hears of it (it may run on any)."""
    await uow.turns.request_cancel(tenant_id, session_id, turn_id)
