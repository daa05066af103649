"""The turn log and a turn's EventWriter against the in-memory unit of work.

The log keeps the session row, the turn row and the events in step; the writer numbers a
turn's events, batches its deltas and stops writing once the session is no longer its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from session_service.sessions.model import Message, Role, Session, Status
from session_service.turns import log
from session_service.turns.model import (
    ContentDelta,
    Event,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    TurnStatus,
    Usage,
)
from session_service.turns.signals import TurnSignals, log_key
from session_service.turns.writer import EventWriter, TurnLost, WriterOptions
from shared.clock import utcnow
from shared.errors import FailedPrecondition
from tests.unit.session_fakes import FakeSessionDatabase

TENANT = "t1"


@pytest.fixture
def database() -> FakeSessionDatabase:
    return FakeSessionDatabase()


async def stored_session(database: FakeSessionDatabase, status: Status = Status.ACTIVE) -> Session:
    now = utcnow()
    session = Session("s1", "cfg", 1, status, now, now, 1)
    async with database.unit_of_work(write=True) as uow:
        await uow.sessions.insert(TENANT, session)
        await uow.commit()
    return session


async def begin(database: FakeSessionDatabase, session: Session, turn_id: str = "t1") -> log.Begun:
    now = utcnow()
    async with database.unit_of_work(write=True) as uow:
        begun = await log.begin(
            uow,
            TENANT,
            session,
            turn_id=turn_id,
            message_id="m1",
            content="hello\x00",
            request_id="r1",
            lease_expires=now + timedelta(seconds=15),
            now=now,
            origin="here",
        )
        await uow.commit()
    return begun


async def fail(database: FakeSessionDatabase, session: Session, code: str) -> tuple[Session, Event]:
    """Ends the session's turn with TurnFailed code, as a reaper would."""
    async with database.unit_of_work(write=True) as uow:
        written = await log.end_turn(
            uow,
            TENANT,
            session,
            TurnFailed(code=code, message="gone"),
            TurnStatus.FAILED,
            now=utcnow(),
            origin="elsewhere",
        )
        await uow.commit()
    return written.session, written.events[0]


async def current(database: FakeSessionDatabase) -> Session:
    async with database.unit_of_work() as uow:
        found = await uow.sessions.get(TENANT, "s1")
    assert found is not None
    return found


async def test_a_turn_begins_with_its_row_its_user_message_and_turn_started_together(
    database: FakeSessionDatabase,
) -> None:
    begun = await begin(database, await stored_session(database))
    (started,) = database.events(TENANT, "s1")
    assert started == begun.event
    assert isinstance(started.body, TurnStarted)
    # Stored as it reads back: PostgreSQL cannot hold U+0000.
    assert started.body.user_message.content == "hello\ufffd"
    assert (started.sequence, started.turn_id, started.body.request_id) == (1, "t1", "r1")
    turn = database.turn(TENANT, "s1", "t1")
    assert turn is not None
    assert (turn.status, turn.first_sequence, turn.request_id) == (TurnStatus.RUNNING, 1, "r1")
    assert await current(database) == begun.session
    assert (begun.session.active_turn_id, begun.session.message_count) == ("t1", 1)
    assert begun.session.version == 2


async def test_nothing_of_a_turn_is_stored_when_the_session_refuses_it(
    database: FakeSessionDatabase,
) -> None:
    session = await stored_session(database, Status.CREATED)
    with pytest.raises(FailedPrecondition):
        await begin(database, session)
    assert database.events(TENANT, "s1") == []
    assert database.turn(TENANT, "s1", "t1") is None
    assert await current(database) == session


async def test_end_turn_closes_the_turn_row_and_frees_the_session(
    database: FakeSessionDatabase,
) -> None:
    begun = await begin(database, await stored_session(database))
    ended, event = await fail(database, begun.session, "X")
    assert (event.sequence, event.turn_id) == (2, "t1")
    assert database.events(TENANT, "s1")[-1] == event
    turn = database.turn(TENANT, "s1", "t1")
    assert turn is not None
    assert (turn.status, turn.last_sequence) == (TurnStatus.FAILED, 2)
    assert turn.end_time is not None
    assert await current(database) == ended
    assert (ended.active_turn_id, ended.last_sequence) == ("", 2)


def nothing_queued(follows: log.NextTurn) -> None:
    """These sessions queue no turns: a writer that begins one is wrong."""
    raise AssertionError(f"no queued turn should begin, yet {follows.turn_id} did")


def writer(database: FakeSessionDatabase, begun: log.Begun, signals: TurnSignals) -> EventWriter:
    return EventWriter(
        database.unit_of_work,
        signals,
        TENANT,
        "s1",
        "t1",
        begun.event.sequence,
        begun.session.message_count,
        WriterOptions(flush_events=3),
        lambda: None,
        start_next=nothing_queued,
    )


async def test_the_writer_batches_deltas_and_ends_the_turn_in_one_write(
    database: FakeSessionDatabase,
) -> None:
    begun = await begin(database, await stored_session(database))
    signals = TurnSignals()
    feed = signals.hub.attach(log_key(TENANT, "s1"))
    assert feed.load(1, [])  # a follower read the log up to TurnStarted
    events = writer(database, begun, signals)
    await events.add(ContentDelta("a"))
    await events.add(ContentDelta("b"))
    assert len(database.events(TENANT, "s1")) == 1  # deltas wait for company
    await events.add(Usage(1, 2, "echo", "m"))
    assert [e.sequence for e in database.events(TENANT, "s1")] == [1, 2, 3, 4]
    reply = events.add_message(Message("m2", Role.ASSISTANT, "ab", 0, utcnow()))
    assert (reply.sequence, reply.turn_id) == (2, "t1")
    await events.add(TurnCompleted("end_turn", reply))
    await events.flush(end=TurnStatus.COMPLETED)
    stored = database.events(TENANT, "s1")
    assert [e.sequence for e in stored] == [1, 2, 3, 4, 5]
    assert isinstance(stored[-1].body, TurnCompleted)
    session = await current(database)
    assert (session.active_turn_id, session.last_sequence, session.message_count) == ("", 5, 2)
    turn = database.turn(TENANT, "s1", "t1")
    assert turn is not None
    assert (turn.status, turn.last_sequence) == (TurnStatus.COMPLETED, 5)
    # This replica's followers got exactly what was stored, after it was stored.
    held = feed.since(1)
    assert held is not None
    assert [e.sequence for e in held] == [2, 3, 4, 5]
    assert events.flushes == 2


async def test_the_writer_stops_without_writing_once_its_turn_was_failed_elsewhere(
    database: FakeSessionDatabase,
) -> None:
    begun = await begin(database, await stored_session(database))
    events = writer(database, begun, TurnSignals())
    await fail(database, begun.session, "TURN_ABANDONED")
    await events.add(ContentDelta("late"))
    with pytest.raises(TurnLost):
        await events.flush()
    assert events.lost
    stored = database.events(TENANT, "s1")
    assert [e.sequence for e in stored] == [1, 2]
    assert isinstance(stored[-1].body, TurnFailed)
    with pytest.raises(TurnLost):
        await events.add(ContentDelta("later"))


async def request_cancel(database: FakeSessionDatabase) -> None:
    async with database.unit_of_work(write=True) as uow:
        await log.request_cancel(uow, TENANT, "s1", "t1")
        await uow.commit()


@pytest.mark.parametrize("heard", [False, True])
async def test_a_turn_polls_its_cancel_flag_only_while_cancels_may_go_unheard(
    database: FakeSessionDatabase, heard: bool
) -> None:
    begun = await begin(database, await stored_session(database))
    interrupted = asyncio.Event()
    events = EventWriter(
        database.unit_of_work,
        TurnSignals(cancels_heard=lambda: heard),
        TENANT,
        "s1",
        "t1",
        begun.event.sequence,
        begun.session.message_count,
        WriterOptions(flush_seconds=0.005, cancel_check_seconds=0.01),
        interrupted.set,
        start_next=nothing_queued,
    )
    events.start()
    try:
        # Its first look, soon after it starts, finds nothing (it covers a request that came
        # while the turn was being handed to its runner).
        await asyncio.sleep(0.05)
        assert not interrupted.is_set()
        await request_cancel(database)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), 0.2)
        # Unheard, the flag is read within moments; heard, not for the safety interval.
        assert interrupted.is_set() is not heard
        # A listener that reconnects has each turn read its flag at once.
        events.check_cancel_soon()
        await asyncio.wait_for(interrupted.wait(), 5)
    finally:
        await events.stop()
