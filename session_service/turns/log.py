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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from session_service.ports import SessionUoW
from session_service.sessions.model import Message, Role, Session
from session_service.turns.model import (
    Approval,
    ApprovalDecided,
    ApprovalStatus,
    Event,
    EventBody,
    Turn,
    TurnStarted,
    TurnStatus,
    storable_body,
)

# What a waiting turn's lease column holds: it has no lease, since nothing runs it.
NO_LEASE = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Begun:
    """A turn begun: the session running it and its first event."""

    session: Session
    event: Event
    user_message: Message


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
) -> Begun:
    """Starts turn_id in session: its row, the user message and TurnStarted, one write.

    Refused (by the session) unless the session is ACTIVE and runs no turn.
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
    running = session.turn_begun(turn_id, sequence, user.sequence, now)
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


async def append(
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
) -> Session:
    """Writes the running turn's events and transcript messages; with end, the turn ends.

    The caller checked that session still names the turn as active. Its lease moves to
    lease_expires when given. display_name names a session that has no name yet. With
    waiting, the turn pauses (WAITING, without a lease) on those approvals: it stays the
    session's active turn, and nothing runs it until they are decided.
    """
    turn_id = session.active_turn_id
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
    return written


async def end_with(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    body: EventBody,
    end: TurnStatus,
    *,
    now: datetime,
    origin: str,
) -> tuple[Session, Event]:
    """Ends the session's running turn with one final event written for it (not by it)."""
    event = Event(session.last_sequence + 1, session.active_turn_id, body, now)
    ended = await append(uow, tenant_id, session, [event], [], now=now, origin=origin, end=end)
    return ended, event


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
    written = await append(uow, tenant_id, session, [event], [], now=now, origin=origin)
    return written, event


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


async def request_cancel(uow: SessionUoW, tenant_id: str, session_id: str, turn_id: str) -> None:
    """Flags the turn to stop; at commit every replica hears of it (it may run on any)."""
    await uow.turns.request_cancel(tenant_id, session_id, turn_id)
