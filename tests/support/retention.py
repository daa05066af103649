"""A session log for event retention tests, written through the turn log into any storage.

Three turns of session "s1": A ended two hours before `now`, B twenty minutes before, and C
still runs. Each wrote two content deltas and a thinking delta.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from session_service.ports import SessionUoWFactory
from session_service.sessions.model import Message, Role, Session, Status
from session_service.turns import log
from session_service.turns.model import (
    ContentDelta,
    Event,
    EventBody,
    ThinkingDelta,
    TurnCompleted,
    TurnStatus,
)

TENANT = "t1"
SESSION = "s1"


@dataclass(frozen=True)
class Written:
    """The last sequence of each turn, and the session as the log left it."""

    a_last: int
    b_last: int
    c_last: int
    session: Session


async def _turn(
    factory: SessionUoWFactory,
    session: Session,
    turn_id: str,
    began: datetime,
    ended: datetime | None,
) -> tuple[Session, int]:
    async with factory(write=True) as uow:
        current = await uow.sessions.get(TENANT, SESSION, for_update=True)
        assert current is not None
        begun = await log.begin(
            uow,
            TENANT,
            current,
            turn_id=turn_id,
            message_id=f"{turn_id}-user",
            content=f"question {turn_id}",
            request_id=f"r-{turn_id}",
            lease_expires=began + timedelta(days=365),
            now=began,
            origin="test",
        )
        first = begun.session.last_sequence + 1
        bodies: list[EventBody] = [
            ContentDelta(f"{turn_id} one"),
            ThinkingDelta("hm"),
            ContentDelta(" two"),
        ]
        events = [Event(first + i, turn_id, body, began) for i, body in enumerate(bodies)]
        written = (
            await log.write(uow, TENANT, begun.session, events, [], now=began, origin="test")
        ).session
        if ended is not None:
            reply = Message(
                f"{turn_id}-reply",
                Role.ASSISTANT,
                f"{turn_id} one two",
                written.message_count + 1,
                ended,
                turn_id=turn_id,
            )
            final = Event(
                written.last_sequence + 1, turn_id, TurnCompleted("end_turn", reply), ended
            )
            written = (
                await log.write(
                    uow,
                    TENANT,
                    written,
                    [final],
                    [reply],
                    now=ended,
                    origin="test",
                    end=TurnStatus.COMPLETED,
                )
            ).session
        await uow.commit()
    return written, written.last_sequence


async def three_turns(factory: SessionUoWFactory, now: datetime) -> Written:
    """Writes the log described above; returns where each turn ended."""
    start = now - timedelta(hours=3)
    session = Session(SESSION, "cfg", 1, Status.ACTIVE, start, start, 1)
    async with factory(write=True) as uow:
        await uow.sessions.insert(TENANT, session)
        await uow.commit()
    session, a_last = await _turn(factory, session, "a", start, now - timedelta(hours=2))
    session, b_last = await _turn(
        factory, session, "b", now - timedelta(minutes=30), now - timedelta(minutes=20)
    )
    session, c_last = await _turn(factory, session, "c", now - timedelta(minutes=1), None)
    return Written(a_last, b_last, c_last, session)


async def log_of(factory: SessionUoWFactory) -> list[Event]:
    """Every stored event of the session, in order."""
    async with factory() as uow:
        return await uow.events.after(TENANT, SESSION, 0, 1000)


async def session_of(factory: SessionUoWFactory) -> Session:
    """The session as stored."""
    async with factory() as uow:
        found = await uow.sessions.get(TENANT, SESSION)
    assert found is not None
    return found


async def check_compaction(factory: SessionUoWFactory, now: datetime) -> None:
    """Retention of one hour compacts turn A only, once; the session is not otherwise written.

    Shared by the in-memory and the SQL storage, so both keep the same contract.
    """
    # Imported here: the retention module is what these checks are about.
    from session_service.turns.retention import EventRetention

    written = await three_turns(factory, now)
    before = await log_of(factory)
    retention = EventRetention(factory, timedelta(hours=1))

    assert await retention.next_due() == now - timedelta(hours=1)
    assert "removing 3 delta event(s)" in await retention.compact()

    after = await log_of(factory)
    kept = {e.sequence for e in after}
    for event in before:
        delta = isinstance(event.body, ContentDelta | ThinkingDelta)
        # Turn A's deltas went; everything else stayed, byte for byte.
        assert (event.sequence in kept) == (not delta or event.sequence > written.a_last)
    assert [e for e in after if e.sequence in kept] == [e for e in before if e.sequence in kept]
    session = await session_of(factory)
    assert session.compacted_through == written.a_last
    # Compaction is no session write: no new version, no activity.
    assert session.version == written.session.version
    assert session.update_time == written.session.update_time

    # Nothing more is due until B's hour is up; a second pass does nothing.
    assert await retention.compact() == ""
    assert await retention.next_due() == now - timedelta(minutes=20) + timedelta(hours=1)

    # A write from a session read before compaction does not move the mark back.
    async with factory(write=True) as uow:
        await uow.sessions.save(TENANT, written.session)
        await uow.commit()
    assert (await session_of(factory)).compacted_through == written.a_last

    # With no retention left, B is due too, and C, still running, is not.
    assert "removing 3 delta event(s)" in await EventRetention(factory, timedelta(0)).compact()
    session = await session_of(factory)
    assert session.compacted_through == written.b_last
    running = [e for e in await log_of(factory) if e.turn_id == "c"]
    assert sum(isinstance(e.body, ContentDelta) for e in running) == 2
