"""SessionService's use cases against the in-memory unit of work: no database, no gRPC.

SessionService and TurnService are built directly over `FakeSessionDatabase`; the preparer
is a stub that hands out a bundle per (config, revision), and the runner records the turns
it is asked to run instead of running them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from session_service.sessions.model import Role, Session, Status, Transition
from session_service.sessions.service import SessionService
from session_service.turns.model import (
    ApprovalDecided,
    EventKind,
    TurnCancelled,
    TurnFailed,
    TurnStarted,
    TurnStatus,
)
from session_service.turns.reaping import ABANDONED
from session_service.turns.service import TurnOptions, TurnService
from session_service.turns.signals import (
    CANCEL_CHANNEL,
    EVENTS_CHANNEL,
    TurnSignals,
    events_payload,
    log_key,
)
from shared.clock import utcnow
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from shared.quotas import PolicyLookup, Quotas, TenantPolicy, unlimited
from tests.unit.session_fakes import (
    FakeSessionDatabase,
    RecordingRunner,
    StubPreparer,
    pause_on_approvals,
)

TENANT = "t1"


def limited(**quotas: int) -> PolicyLookup:
    return lambda _tenant_id: TenantPolicy(quotas=Quotas(**quotas))


@pytest.fixture
def database() -> FakeSessionDatabase:
    return FakeSessionDatabase()


@pytest.fixture
def preparer() -> StubPreparer:
    return StubPreparer()


@pytest.fixture
def sessions(database: FakeSessionDatabase, preparer: StubPreparer) -> SessionService:
    return SessionService(database.unit_of_work, preparer)


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def signals() -> TurnSignals:
    return TurnSignals()


def turn_service(
    database: FakeSessionDatabase,
    runner: RecordingRunner,
    signals: TurnSignals,
    *,
    lease_seconds: float = 15.0,
    policies: PolicyLookup = unlimited,
) -> TurnService:
    options = TurnOptions(lease_seconds=lease_seconds, policies=policies)
    return TurnService(database.unit_of_work, runner, signals, options)


@pytest.fixture
def turns(
    database: FakeSessionDatabase, runner: RecordingRunner, signals: TurnSignals
) -> TurnService:
    return turn_service(database, runner, signals)


async def active_session(sessions: SessionService, session_id: str = "s1") -> Session:
    return await sessions.create(TENANT, "cfg", session_id=session_id, start=True)


# --- CreateSession ---------------------------------------------------------------------


async def test_create_pins_the_prepared_revision_and_stores_the_session(
    sessions: SessionService, preparer: StubPreparer, database: FakeSessionDatabase
) -> None:
    created = await sessions.create(TENANT, "cfg", session_id="s1", tags={"team": "a"})
    assert created.status is Status.CREATED
    assert created.config_revision == 3
    assert created.version == 1
    assert preparer.calls == [(TENANT, "cfg", 0)]
    assert await sessions.get(TENANT, "s1") == created
    assert database.commits == 1
    with pytest.raises(NotFound):
        await sessions.get("other-tenant", "s1")


async def test_create_with_start_is_active_and_a_taken_id_is_already_exists(
    sessions: SessionService,
) -> None:
    created = await sessions.create(TENANT, "cfg", session_id="s1", config_revision=2, start=True)
    assert (created.status, created.config_revision) == (Status.ACTIVE, 2)
    with pytest.raises(AlreadyExists) as taken:
        await sessions.create(TENANT, "cfg", session_id="s1")
    assert taken.value.reason == "SESSION_ALREADY_EXISTS"


async def test_a_create_retried_with_its_request_id_returns_the_first_session(
    sessions: SessionService, preparer: StubPreparer, database: FakeSessionDatabase
) -> None:
    first = await sessions.create(TENANT, "cfg", request_id="r1", tags={"a": "1", "b": "2"})
    # The same request, its tags in another order.
    again = await sessions.create(TENANT, "cfg", request_id="r1", tags={"b": "2", "a": "1"})
    assert again == first
    assert len(database.state.sessions) == 1
    # The retry is answered before anything is prepared again.
    assert len(preparer.calls) == 1
    # Another tenant's identical request_id is its own.
    theirs = await sessions.create("t2", "cfg", request_id="r1", tags={"a": "1", "b": "2"})
    assert theirs.session_id != first.session_id


@pytest.mark.parametrize(
    "changed",
    [
        {"config_id": "other"},
        {"config_revision": 2},
        {"session_id": "s9"},
        {"tags": {"a": "2", "b": "2"}},
        {"start": True},
    ],
)
async def test_a_request_id_reused_for_another_create_is_refused(
    sessions: SessionService, database: FakeSessionDatabase, changed: dict[str, Any]
) -> None:
    request: dict[str, Any] = {"config_id": "cfg", "tags": {"a": "1", "b": "2"}}
    await sessions.create(TENANT, request_id="r1", **request)
    with pytest.raises(InvalidArgument) as reused:
        await sessions.create(TENANT, request_id="r1", **{**request, **changed})
    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert len(database.state.sessions) == 1


async def test_prepare_config_is_a_dry_run_that_checks_its_reference(
    sessions: SessionService, preparer: StubPreparer, database: FakeSessionDatabase
) -> None:
    prepared = await sessions.prepare_config(TENANT, "cfg", 0, None)
    assert (prepared.config_id, prepared.revision) == ("cfg", 3)
    for config_id, revision, field in (("", 0, "config_id"), ("cfg", -1, "revision")):
        with pytest.raises(InvalidArgument) as refused:
            await sessions.prepare_config(TENANT, config_id, revision, None)
        assert [v.field for v in refused.value.violations] == [field]
    assert preparer.calls == [(TENANT, "cfg", 0)]
    assert database.state.sessions == {}


async def test_the_session_quota_refuses_the_create_over_it(
    database: FakeSessionDatabase, preparer: StubPreparer
) -> None:
    service = SessionService(database.unit_of_work, preparer, limited(sessions=2))
    await service.create(TENANT, "cfg", session_id="s1")
    await service.create("t2", "cfg", session_id="s1")  # another tenant counts for itself
    await service.create(TENANT, "cfg", session_id="s2")
    with pytest.raises(ResourceExhausted) as refused:
        await service.create(TENANT, "cfg", session_id="s3")
    assert refused.value.metadata["used"] == "2"
    # The refused create's insert was rolled back with its unit.
    assert set(database.state.sessions) == {(TENANT, "s1"), ("t2", "s1"), (TENANT, "s2")}
    await service.delete(TENANT, "s1")
    await service.create(TENANT, "cfg", session_id="s3")


async def test_uncommitted_writes_are_discarded(database: FakeSessionDatabase) -> None:
    now = utcnow()
    async with database.unit_of_work(write=True) as uow:
        await uow.sessions.insert(
            TENANT, Session("s1", "cfg", 1, Status.CREATED, now, now, version=1)
        )
        assert await uow.sessions.get(TENANT, "s1") is not None
    async with database.unit_of_work() as uow:
        assert await uow.sessions.get(TENANT, "s1") is None
    assert database.commits == 0


# --- Lifecycle -------------------------------------------------------------------------


async def test_start_complete_and_resume_bump_the_version(
    sessions: SessionService, preparer: StubPreparer
) -> None:
    created = await sessions.create(TENANT, "cfg", session_id="s1", config_revision=1)
    started = await sessions.transition(TENANT, "s1", Transition.START)
    assert (started.status, started.version) == (Status.ACTIVE, created.version + 1)
    completed = await sessions.transition(TENANT, "s1", Transition.COMPLETE)
    assert (completed.status, completed.version) == (Status.COMPLETED, started.version + 1)
    resumed = await sessions.transition(TENANT, "s1", Transition.RESUME)
    assert (resumed.status, resumed.config_revision) == (Status.ACTIVE, 1)
    await sessions.transition(TENANT, "s1", Transition.TERMINATE)
    preparer.latest = 7
    upgraded = await sessions.transition(TENANT, "s1", Transition.RESUME, upgrade_config=True)
    assert (upgraded.status, upgraded.config_revision) == (Status.ACTIVE, 7)
    assert await sessions.get(TENANT, "s1") == upgraded


async def test_an_illegal_transition_is_failed_precondition_and_changes_nothing(
    sessions: SessionService,
) -> None:
    created = await sessions.create(TENANT, "cfg", session_id="s1")
    with pytest.raises(FailedPrecondition) as illegal:
        await sessions.transition(TENANT, "s1", Transition.COMPLETE)
    assert illegal.value.reason == "ILLEGAL_TRANSITION"
    assert illegal.value.metadata == {"status": "CREATED", "transition": "complete"}
    assert await sessions.get(TENANT, "s1") == created
    with pytest.raises(NotFound):
        await sessions.transition(TENANT, "nope", Transition.START)


# --- SendMessage: accepting a turn -----------------------------------------------------


async def test_accepting_a_turn_logs_it_announces_it_and_hands_it_to_the_runner(
    sessions: SessionService,
    turns: TurnService,
    runner: RecordingRunner,
    signals: TurnSignals,
    database: FakeSessionDatabase,
) -> None:
    await active_session(sessions)
    accepted = await turns.send(TENANT, "s1", "hello", request_id="r1")
    assert accepted.after_sequence == 0
    assert [job.turn_id for job in runner.jobs] == [accepted.turn_id]
    job = runner.jobs[0]
    assert (job.config_id, job.config_revision, job.last_sequence, job.message_count) == (
        "cfg",
        3,
        1,
        1,
    )
    session = await sessions.get(TENANT, "s1")
    assert (session.active_turn_id, session.last_sequence, session.message_count) == (
        accepted.turn_id,
        1,
        1,
    )
    [started] = database.events(TENANT, "s1")
    assert isinstance(started.body, TurnStarted)
    assert started.body.user_message.content == "hello"
    assert started.body.request_id == "r1"
    turn = database.turn(TENANT, "s1", accepted.turn_id)
    assert turn is not None
    assert turn.status is TurnStatus.RUNNING
    assert database.announced == [
        (EVENTS_CHANNEL, events_payload(log_key(TENANT, "s1"), 1, signals.origin))
    ]


async def test_one_turn_at_a_time_and_turn_in_progress_names_the_running_turn(
    sessions: SessionService, turns: TurnService, runner: RecordingRunner
) -> None:
    await active_session(sessions)
    first = await turns.send(TENANT, "s1", "one")
    runner.running.add(first.turn_id)
    with pytest.raises(FailedPrecondition) as busy:
        await turns.send(TENANT, "s1", "two")
    assert busy.value.reason == "TURN_IN_PROGRESS"
    assert busy.value.metadata == {"turn_id": first.turn_id, "session_id": "s1"}
    assert len(runner.jobs) == 1
    # Nothing of the refused message was stored.
    assert (await sessions.get(TENANT, "s1")).message_count == 1


async def test_a_retried_send_reattaches_to_its_turn(
    sessions: SessionService, turns: TurnService, runner: RecordingRunner
) -> None:
    await active_session(sessions)
    first = await turns.send(TENANT, "s1", "hello", request_id="r1")
    again = await turns.send(TENANT, "s1", "hello", request_id="r1")
    assert (again.turn_id, again.after_sequence) == (first.turn_id, first.after_sequence)
    assert len(runner.jobs) == 1
    with pytest.raises(InvalidArgument) as reused:
        await turns.send(TENANT, "s1", "something else", request_id="r1")
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_turns_run_only_in_active_sessions(
    sessions: SessionService, turns: TurnService
) -> None:
    await sessions.create(TENANT, "cfg", session_id="s1")
    with pytest.raises(FailedPrecondition) as created:
        await turns.send(TENANT, "s1", "hello")
    assert created.value.reason == "SESSION_NOT_ACTIVE"
    with pytest.raises(NotFound):
        await turns.send(TENANT, "nope", "hello")
    with pytest.raises(InvalidArgument):
        await turns.send(TENANT, "s1", "   ")


async def test_the_concurrent_turn_quota_is_checked_under_the_tenant_lock(
    sessions: SessionService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
    signals: TurnSignals,
) -> None:
    turns = turn_service(database, runner, signals, policies=limited(concurrent_turns=1))
    await active_session(sessions, "s1")
    await active_session(sessions, "s2")
    await turns.send(TENANT, "s1", "one")
    with pytest.raises(ResourceExhausted):
        await turns.send(TENANT, "s2", "two")
    assert database.locks[-2:] == [(TENANT, "turns"), (TENANT, "turns")]
    assert (await sessions.get(TENANT, "s2")).last_sequence == 0


# --- CancelTurn ------------------------------------------------------------------------


async def test_cancel_flags_the_turn_announces_it_and_cancels_it_here(
    sessions: SessionService,
    turns: TurnService,
    runner: RecordingRunner,
    database: FakeSessionDatabase,
) -> None:
    await active_session(sessions)
    accepted = await turns.send(TENANT, "s1", "hello")
    runner.running.add(accepted.turn_id)
    assert await turns.cancel(TENANT, "s1", "") == accepted.turn_id
    turn = database.turn(TENANT, "s1", accepted.turn_id)
    assert turn is not None
    assert turn.cancel_requested
    assert database.announced[-1] == (CANCEL_CHANNEL, accepted.turn_id)
    assert runner.cancelled == [accepted.turn_id]
    with pytest.raises(NotFound):
        await turns.cancel(TENANT, "s1", "no-such-turn")


async def test_cancel_without_a_running_turn_is_no_active_turn(
    sessions: SessionService, turns: TurnService
) -> None:
    await active_session(sessions)
    with pytest.raises(FailedPrecondition) as idle:
        await turns.cancel(TENANT, "s1", "")
    assert idle.value.reason == "NO_ACTIVE_TURN"


# --- Reaping a turn whose lease ran out ------------------------------------------------


async def test_a_turn_whose_lease_ran_out_is_failed_as_abandoned(
    sessions: SessionService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
    signals: TurnSignals,
) -> None:
    turns = turn_service(database, runner, signals, lease_seconds=-1.0)
    await active_session(sessions)
    accepted = await turns.send(TENANT, "s1", "hello")
    reaped = await turns.reap(TENANT, "s1")
    assert (reaped.active_turn_id, reaped.last_sequence) == ("", 2)
    started, failed = database.events(TENANT, "s1")
    assert isinstance(started.body, TurnStarted)
    assert isinstance(failed.body, TurnFailed)
    assert (failed.sequence, failed.turn_id, failed.body.code) == (2, accepted.turn_id, ABANDONED)
    turn = database.turn(TENANT, "s1", accepted.turn_id)
    assert turn is not None
    assert (turn.status, turn.last_sequence) == (TurnStatus.FAILED, 2)
    assert database.announced[-1] == (
        EVENTS_CHANNEL,
        events_payload(log_key(TENANT, "s1"), 2, signals.origin),
    )
    # The session takes a new turn at once.
    again = await turns.send(TENANT, "s1", "again")
    assert again.after_sequence == 2


async def test_a_live_lease_and_a_turn_running_here_are_left_alone(
    sessions: SessionService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
    signals: TurnSignals,
) -> None:
    turns = turn_service(database, runner, signals)
    await active_session(sessions)
    accepted = await turns.send(TENANT, "s1", "hello")
    assert (await turns.reap(TENANT, "s1")).active_turn_id == accepted.turn_id
    expired = utcnow() - timedelta(seconds=1)
    async with database.unit_of_work(write=True) as uow:
        await uow.turns.update(TENANT, "s1", accepted.turn_id, lease_expires=expired)
        await uow.commit()
    runner.running.add(accepted.turn_id)
    assert (await turns.reap(TENANT, "s1")).active_turn_id == accepted.turn_id
    assert len(database.events(TENANT, "s1")) == 1


async def test_reading_a_session_fails_its_abandoned_turn(
    sessions: SessionService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
    signals: TurnSignals,
) -> None:
    turns = turn_service(database, runner, signals, lease_seconds=-1.0)
    await active_session(sessions)
    await turns.send(TENANT, "s1", "hello")
    read = await sessions.get(TENANT, "s1")
    assert (read.active_turn_id, read.last_sequence) == ("", 2)
    assert [e.kind for e in database.events(TENANT, "s1")][-1] is TurnFailed.kind
    # A lifecycle move is then allowed: nothing runs any more.
    completed = await sessions.transition(TENANT, "s1", Transition.COMPLETE)
    assert completed.status is Status.COMPLETED


async def test_recover_orphans_fails_every_running_turn(
    sessions: SessionService, turns: TurnService, database: FakeSessionDatabase
) -> None:
    await active_session(sessions)
    accepted = await turns.send(TENANT, "s1", "hello")
    assert await turns.recover_orphans() == 1
    turn = database.turn(TENANT, "s1", accepted.turn_id)
    assert turn is not None
    assert turn.status is TurnStatus.FAILED
    assert (await sessions.get(TENANT, "s1")).active_turn_id == ""
    stored = database.events(TENANT, "s1")[-1]
    assert isinstance(stored.body, TurnFailed)
    assert stored.body.code == ABANDONED


# --- Transcript, listing and delete ----------------------------------------------------


async def test_append_message_and_delete_refuse_while_a_turn_runs(
    sessions: SessionService,
    turns: TurnService,
    runner: RecordingRunner,
    database: FakeSessionDatabase,
) -> None:
    await active_session(sessions)
    note = await sessions.append_message(TENANT, "s1", Role.SYSTEM, "be brief")
    assert note.sequence == 1
    accepted = await turns.send(TENANT, "s1", "hello")
    runner.running.add(accepted.turn_id)
    with pytest.raises(FailedPrecondition) as busy:
        await sessions.append_message(TENANT, "s1", Role.SYSTEM, "more")
    assert busy.value.reason == "TURN_IN_PROGRESS"
    with pytest.raises(FailedPrecondition):
        await sessions.delete(TENANT, "s1")
    page = await sessions.list_messages(TENANT, "s1", 10, "")
    assert [m.content for m in page.items] == ["be brief", "hello"]
    runner.running.clear()
    async with database.unit_of_work(write=True) as uow:
        expired = utcnow() - timedelta(seconds=1)
        await uow.turns.update(TENANT, "s1", accepted.turn_id, lease_expires=expired)
        await uow.commit()
    # A turn whose runner is gone holds nothing up: it is failed first.
    await sessions.delete(TENANT, "s1")
    assert database.state.sessions == {}
    assert database.state.messages == {}
    assert database.state.turns == {}
    assert database.state.events == {}


async def test_list_sessions_filters_and_pages_oldest_first(sessions: SessionService) -> None:
    for number in range(3):
        await sessions.create(TENANT, "cfg", session_id=f"s{number}", tags={"n": str(number)})
    await sessions.transition(TENANT, "s1", Transition.START)
    first = await sessions.list_sessions(TENANT, "", 2, "")
    assert [s.session_id for s in first.items] == ["s0", "s1"]
    assert first.total_size == 3
    rest = await sessions.list_sessions(TENANT, "", 2, first.next_page_token)
    assert [s.session_id for s in rest.items] == ["s2"]
    active = await sessions.list_sessions(TENANT, "status = ACTIVE", 10, "")
    assert [s.session_id for s in active.items] == ["s1"]


# --- Approvals: a turn paused on tool calls --------------------------------------------


async def paused_turn(
    database: FakeSessionDatabase,
    turns: TurnService,
    sessions: SessionService,
    calls: dict[str, datetime | None],
) -> str:
    """A turn of session s1 paused on the given tool calls (id -> deadline), as the engine
    leaves it: its events and approvals stored, the turn WAITING."""
    await active_session(sessions)
    accepted = await turns.send(TENANT, "s1", "hello")
    await pause_on_approvals(database, TENANT, "s1", calls)
    return accepted.turn_id


async def test_the_last_decision_resumes_the_waiting_turn(
    sessions: SessionService,
    turns: TurnService,
    runner: RecordingRunner,
    database: FakeSessionDatabase,
) -> None:
    turn_id = await paused_turn(database, turns, sessions, {"a": None, "b": None})
    waiting = database.turn(TENANT, "s1", turn_id)
    assert waiting is not None
    assert waiting.status is TurnStatus.WAITING
    started = len(runner.jobs)

    first = await turns.decide(TENANT, "s1", "a", True, "fine")
    assert (first.resumed, first.pending) == (False, ("b",))
    assert len(runner.jobs) == started
    with pytest.raises(FailedPrecondition) as twice:
        await turns.decide(TENANT, "s1", "a", False)
    assert twice.value.reason == "APPROVAL_ALREADY_DECIDED"
    with pytest.raises(FailedPrecondition) as unknown:
        await turns.decide(TENANT, "s1", "zzz", True)
    assert unknown.value.reason == "APPROVAL_NOT_PENDING"

    second = await turns.decide(TENANT, "s1", "b", False, "too risky")
    assert (second.resumed, second.pending) == (True, ())
    job = runner.jobs[-1]
    session = await sessions.get(TENANT, "s1")
    assert (job.turn_id, job.resume, job.last_sequence) == (turn_id, True, session.last_sequence)
    resumed = database.turn(TENANT, "s1", turn_id)
    assert resumed is not None
    assert resumed.status is TurnStatus.RUNNING
    assert resumed.lease_expires > utcnow()
    decided = [
        e.body for e in database.events(TENANT, "s1") if e.kind is EventKind.APPROVAL_DECIDED
    ]
    assert decided == [ApprovalDecided("a", True, "fine"), ApprovalDecided("b", False, "too risky")]
    # Once running again, no call waits.
    with pytest.raises(FailedPrecondition) as running:
        await turns.decide(TENANT, "s1", "b", True)
    assert running.value.reason == "APPROVAL_NOT_PENDING"


async def test_a_waiting_turn_has_no_lease_to_run_out(
    sessions: SessionService,
    database: FakeSessionDatabase,
    runner: RecordingRunner,
    signals: TurnSignals,
) -> None:
    turns = turn_service(database, runner, signals, lease_seconds=-1.0)
    turn_id = await paused_turn(database, turns, sessions, {"a": None})
    assert (await turns.reap(TENANT, "s1")).active_turn_id == turn_id
    assert await turns.recover_orphans() == 0
    with pytest.raises(FailedPrecondition):
        await turns.send(TENANT, "s1", "another")


async def test_expired_approvals_are_denied_and_cancel_ends_a_waiting_turn(
    sessions: SessionService,
    turns: TurnService,
    runner: RecordingRunner,
    database: FakeSessionDatabase,
) -> None:
    past = utcnow() - timedelta(seconds=1)
    later = utcnow() + timedelta(hours=1)
    turn_id = await paused_turn(database, turns, sessions, {"late": past, "open": later})
    assert await turns.next_approval_expiry() == past
    assert await turns.expire_approvals() == 1
    assert await turns.expire_approvals() == 0
    assert await turns.next_approval_expiry() == later
    last = database.events(TENANT, "s1")[-1].body
    assert last == ApprovalDecided("late", False, "Nobody approved the call in time.")

    assert await turns.cancel(TENANT, "s1", "") == turn_id
    ended = database.events(TENANT, "s1")[-1]
    assert isinstance(ended.body, TurnCancelled)
    assert (await sessions.get(TENANT, "s1")).active_turn_id == ""
    assert await turns.next_approval_expiry() is None
