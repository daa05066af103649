"""SendMessage if_busy against the in-memory unit of work: the queue's order, the ending path
that begins the next turn, rollback, the cap, and what a session's end does with the queue.

A RecordingRunner stands in for the engine: it records the turns it is asked to run. A
running turn "ends" the way its writer ends it, through `log.write` with end.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from session_service.sessions.model import Message, Role, Session, Status, Transition
from session_service.sessions.service import SessionService
from session_service.turns import log
from session_service.turns.model import (
    Event,
    EventKind,
    SessionRewound,
    TurnCancelled,
    TurnCompleted,
    TurnStarted,
    TurnStatus,
)
from session_service.turns.queue import IfBusy, QueuedTurn
from session_service.turns.reaping import fail_abandoned
from session_service.turns.service import TurnOptions, TurnService
from session_service.turns.signals import TurnSignals
from shared.clock import utcnow
from shared.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from tests.unit.session_fakes import (
    FakeSessionDatabase,
    RecordingRunner,
    StubPreparer,
    pause_on_approvals,
)

TENANT = "t1"


@pytest.fixture
def database() -> FakeSessionDatabase:
    return FakeSessionDatabase()


@pytest.fixture
def sessions(database: FakeSessionDatabase, runner: RecordingRunner) -> SessionService:
    return SessionService(database.unit_of_work, StubPreparer(), start_queued=runner.start_next)


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner(runs_started=True)


@pytest.fixture
def signals() -> TurnSignals:
    return TurnSignals()


@pytest.fixture
def turns(
    database: FakeSessionDatabase, runner: RecordingRunner, signals: TurnSignals
) -> TurnService:
    return TurnService(database.unit_of_work, runner, signals, TurnOptions(max_queued_turns=3))


async def running(sessions: SessionService, turns: TurnService) -> str:
    """An active session s1 running turn A (request r-a); returns A's turn id."""
    await sessions.create(TENANT, "cfg", session_id="s1", start=True)
    return (await turns.send(TENANT, "s1", "A", request_id="r-a")).turn_id


async def current(database: FakeSessionDatabase) -> Session:
    async with database.unit_of_work() as uow:
        found = await uow.sessions.get(TENANT, "s1")
    assert found is not None
    return found


async def transcript(database: FakeSessionDatabase) -> list[tuple[Role, str]]:
    async with database.unit_of_work() as uow:
        messages = await uow.messages.page(TENANT, "s1", 0, 100)
    return [(m.role, m.content) for m in messages]


async def queued_contents(database: FakeSessionDatabase) -> list[str]:
    async with database.unit_of_work() as uow:
        return [e.content for e in await uow.queue.entries(TENANT, "s1")]


async def end_running_turn(
    database: FakeSessionDatabase, reply: str, end: TurnStatus = TurnStatus.COMPLETED
) -> log.Written:
    """Ends the session's running turn as its writer does: reply, final event, end."""
    now = utcnow()
    async with database.unit_of_work(write=True) as uow:
        session = await uow.sessions.get(TENANT, "s1", for_update=True)
        assert session is not None
        turn_id = session.active_turn_id
        message = Message(
            f"{turn_id}-reply",
            Role.ASSISTANT,
            reply,
            session.message_count + 1,
            now,
            turn_id=turn_id,
        )
        body = (
            TurnCompleted("end_turn", message)
            if end is TurnStatus.COMPLETED
            else TurnCancelled(reason="cancelled", partial_message=message)
        )
        final = Event(session.last_sequence + 1, turn_id, body, now)
        written = await log.write(
            uow, TENANT, session, [final], [message], now=now, origin="here", end=end
        )
        await uow.commit()
    return written


async def test_enqueue_appends_in_order_and_interrupt_goes_first(
    sessions: SessionService,
    turns: TurnService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
) -> None:
    a = await running(sessions, turns)
    b = await turns.send(TENANT, "s1", "B", if_busy=IfBusy.ENQUEUE)
    c = await turns.send(TENANT, "s1", "C", if_busy=IfBusy.ENQUEUE)
    assert (b.queued_ahead, c.queued_ahead) == (1, 2)
    assert await queued_contents(database) == ["B", "C"]
    assert (await current(database)).queued_turns == 2
    assert [job.turn_id for job in runner.jobs] == [a]  # only A runs
    assert not database.turn(TENANT, "s1", a).cancel_requested  # type: ignore[union-attr]

    d = await turns.send(TENANT, "s1", "D", if_busy=IfBusy.INTERRUPT)
    assert d.queued_ahead == 1
    assert await queued_contents(database) == ["D", "B", "C"]
    assert database.turn(TENANT, "s1", a).cancel_requested  # type: ignore[union-attr]
    assert runner.cancelled == [a]


async def test_reject_is_unchanged_and_names_the_running_turn(
    sessions: SessionService, turns: TurnService, database: FakeSessionDatabase
) -> None:
    a = await running(sessions, turns)
    with pytest.raises(FailedPrecondition) as refused:
        await turns.send(TENANT, "s1", "B", if_busy=IfBusy.REJECT)
    assert refused.value.reason == "TURN_IN_PROGRESS"
    assert refused.value.metadata["turn_id"] == a
    assert await queued_contents(database) == []


async def test_the_end_of_a_turn_begins_the_next_queued_one_in_the_same_write(
    sessions: SessionService,
    turns: TurnService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
) -> None:
    a = await running(sessions, turns)
    b = await turns.send(TENANT, "s1", "B", turn_context={"k": "v"}, if_busy=IfBusy.ENQUEUE)
    await turns.send(TENANT, "s1", "C", if_busy=IfBusy.ENQUEUE)

    written = await end_running_turn(database, "answer A")

    assert written.next is not None
    assert written.next.turn_id == b.turn_id
    assert written.next.turn_context == {"k": "v"}
    assert [e.turn_id for e in written.events] == [a, b.turn_id]
    assert isinstance(written.events[1].body, TurnStarted)
    session = await current(database)
    assert session.active_turn_id == b.turn_id
    assert session.queued_turns == 1
    assert await queued_contents(database) == ["C"]
    assert await transcript(database) == [
        (Role.USER, "A"),
        (Role.ASSISTANT, "answer A"),
        (Role.USER, "B"),
    ]
    # The turn service runs what the writer began, as it runs an accepted turn.
    turns.start_queued(written.next)
    assert runner.jobs[-1].turn_id == b.turn_id
    assert runner.jobs[-1].last_sequence == written.events[1].sequence


async def test_rollback_removes_the_stopped_turns_messages_and_logs_why(
    sessions: SessionService, turns: TurnService, database: FakeSessionDatabase
) -> None:
    await sessions.create(TENANT, "cfg", session_id="s1", start=True)
    await turns.send(TENANT, "s1", "first")
    await end_running_turn(database, "first answer")
    a = (await turns.send(TENANT, "s1", "A")).turn_id
    b = await turns.send(TENANT, "s1", "B instead", if_busy=IfBusy.ROLLBACK)
    assert b.queued_ahead == 1
    assert database.turn(TENANT, "s1", a).cancel_requested  # type: ignore[union-attr]

    # The engine stops A with its partial reply, as CancelTurn would.
    written = await end_running_turn(database, "half an answ", end=TurnStatus.CANCELLED)

    kinds = [e.kind for e in written.events]
    assert kinds == [EventKind.TURN_CANCELLED, EventKind.SESSION_REWOUND, EventKind.TURN_STARTED]
    cancelled = written.events[0].body
    assert isinstance(cancelled, TurnCancelled)
    assert cancelled.reason == log.ROLLED_BACK
    rewound = written.events[1].body
    assert isinstance(rewound, SessionRewound)
    assert (rewound.to_sequence, rewound.removed_messages) == (2, 2)
    assert await transcript(database) == [
        (Role.USER, "first"),
        (Role.ASSISTANT, "first answer"),
        (Role.USER, "B instead"),
    ]
    session = await current(database)
    assert session.message_count == 3
    assert session.active_turn_id == b.turn_id
    # The log keeps what the rolled-back turn said.
    logged = [e.body for e in database.events(TENANT, "s1")]
    assert any(isinstance(x, TurnStarted) and x.user_message.content == "A" for x in logged)


async def test_interrupt_ends_a_turn_waiting_for_approval_at_once_and_runs(
    sessions: SessionService,
    turns: TurnService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
) -> None:
    a = await running(sessions, turns)
    await pause_on_approvals(database, TENANT, "s1", {"call-1": None})

    b = await turns.send(TENANT, "s1", "B", if_busy=IfBusy.INTERRUPT)

    assert b.queued_ahead == 0  # it began at once: no TurnQueued
    assert runner.jobs[-1].turn_id == b.turn_id
    assert database.turn(TENANT, "s1", a).status is TurnStatus.CANCELLED  # type: ignore[union-attr]
    session = await current(database)
    assert (session.active_turn_id, session.queued_turns) == (b.turn_id, 0)


async def test_the_queue_is_capped(
    sessions: SessionService, turns: TurnService, database: FakeSessionDatabase
) -> None:
    await running(sessions, turns)
    for text in ("B", "C", "D"):
        await turns.send(TENANT, "s1", text, if_busy=IfBusy.ENQUEUE)
    with pytest.raises(ResourceExhausted) as full:
        await turns.send(TENANT, "s1", "E", if_busy=IfBusy.ENQUEUE)
    assert full.value.reason == "TURN_QUEUE_FULL"
    assert full.value.violations[0].subject == "sessions/s1/queued_turns"
    assert await queued_contents(database) == ["B", "C", "D"]
    assert (await current(database)).queued_turns == 3


async def test_a_retry_re_attaches_to_its_queued_turn(
    sessions: SessionService, turns: TurnService, database: FakeSessionDatabase
) -> None:
    await running(sessions, turns)
    first = await turns.send(TENANT, "s1", "B", request_id="r-b", if_busy=IfBusy.ENQUEUE)
    again = await turns.send(TENANT, "s1", "B", request_id="r-b", if_busy=IfBusy.ENQUEUE)
    assert (again.turn_id, again.queued_ahead) == (first.turn_id, 1)
    assert await queued_contents(database) == ["B"]
    with pytest.raises(InvalidArgument) as reused:
        await turns.send(TENANT, "s1", "other", request_id="r-b", if_busy=IfBusy.ENQUEUE)
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_a_session_with_queued_turns_cannot_end_and_keeps_them(
    sessions: SessionService, turns: TurnService, database: FakeSessionDatabase
) -> None:
    await running(sessions, turns)
    await turns.send(TENANT, "s1", "B", if_busy=IfBusy.ENQUEUE)
    for transition in (Transition.COMPLETE, Transition.TERMINATE):
        with pytest.raises(FailedPrecondition) as refused:
            await sessions.transition(TENANT, "s1", transition)
        assert refused.value.reason == "TURN_IN_PROGRESS"
    with pytest.raises(FailedPrecondition):
        await sessions.delete(TENANT, "s1")
    assert await queued_contents(database) == ["B"]


async def test_deleting_a_session_drops_its_queue(database: FakeSessionDatabase) -> None:
    now = utcnow()
    async with database.unit_of_work(write=True) as uow:
        await uow.sessions.insert(TENANT, Session("s1", "cfg", 1, Status.ACTIVE, now, now, 1))
        await uow.queue.add(TENANT, QueuedTurn("s1", 1, "t", "m", "r", "x", now))
        await uow.sessions.delete(TENANT, "s1")
        await uow.commit()
    assert await queued_contents(database) == []


async def test_a_read_that_reaps_an_abandoned_turn_starts_the_next(
    sessions: SessionService,
    turns: TurnService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
) -> None:
    a = await running(sessions, turns)
    b = await turns.send(TENANT, "s1", "B", if_busy=IfBusy.ENQUEUE)
    # A's replica died: nothing runs it, and its lease has run out.
    runner.jobs.clear()
    async with database.unit_of_work(write=True) as uow:
        await uow.turns.update(TENANT, "s1", a, lease_expires=utcnow() - timedelta(seconds=1))
        await uow.commit()

    session = await sessions.get(TENANT, "s1")

    assert session.active_turn_id == b.turn_id
    assert database.turn(TENANT, "s1", a).status is TurnStatus.FAILED  # type: ignore[union-attr]
    assert [job.turn_id for job in runner.jobs] == [b.turn_id]


async def test_fail_abandoned_hands_back_the_turn_it_began(database: FakeSessionDatabase) -> None:
    now = utcnow()
    async with database.unit_of_work(write=True) as uow:
        session = Session("s1", "cfg", 1, Status.ACTIVE, now, now, 1)
        await uow.sessions.insert(TENANT, session)
        begun = await log.begin(
            uow,
            TENANT,
            session,
            turn_id="a",
            message_id="m-a",
            content="A",
            request_id="",
            lease_expires=now - timedelta(seconds=1),
            now=now,
            origin="-",
        )
        await uow.queue.add(TENANT, QueuedTurn("s1", 1, "b", "m-b", "r-b", "B", now))
        queued = begun.session.turn_queued(now)
        await uow.sessions.save(TENANT, queued)
        reaped, written = await fail_abandoned(uow, TENANT, queued)
        await uow.commit()
    assert written is not None
    assert written.next is not None
    assert written.next.turn_id == "b"
    assert (reaped.active_turn_id, reaped.queued_turns) == ("b", 0)
    assert [e.kind for e in written.events] == [EventKind.TURN_FAILED, EventKind.TURN_STARTED]


async def test_cancelling_a_waiting_turn_begins_the_next_here(
    sessions: SessionService,
    turns: TurnService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
) -> None:
    a = await running(sessions, turns)
    b = await turns.send(TENANT, "s1", "B", if_busy=IfBusy.ENQUEUE)
    await pause_on_approvals(database, TENANT, "s1", {"call-1": None})

    assert await turns.cancel(TENANT, "s1", "") == a

    session = await current(database)
    assert (session.active_turn_id, session.queued_turns) == (b.turn_id, 0)
    assert runner.jobs[-1].turn_id == b.turn_id
    assert database.turn(TENANT, "s1", a).status is TurnStatus.CANCELLED  # type: ignore[union-attr]
