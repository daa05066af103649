"""The Session aggregate: each write is a new version, and it guards its own transitions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from session_service.sessions.model import Message, Role, Session, Status, Transition
from shared.clock import utcnow
from shared.errors import FailedPrecondition

T0 = utcnow()
LATER = T0 + timedelta(seconds=5)


def session(status: Status = Status.ACTIVE, active_turn_id: str = "", **changes: int) -> Session:
    return Session(
        session_id="s1",
        config_id="cfg",
        config_revision=2,
        status=status,
        create_time=T0,
        update_time=T0,
        version=4,
        active_turn_id=active_turn_id,
        message_count=changes.get("message_count", 3),
        last_sequence=changes.get("last_sequence", 7),
    )


def message(sequence: int) -> Message:
    return Message("m", Role.USER, "hi", sequence, LATER)


def reason(error: pytest.ExceptionInfo[FailedPrecondition]) -> str:
    return error.value.reason


def test_every_write_is_the_next_version_at_the_time_it_happened() -> None:
    before = session()
    writes = [
        before.moved(Transition.COMPLETE, LATER),
        before.with_message(message(4), LATER),
        before.turn_begun("t1", 8, 4, LATER),
        session(active_turn_id="t1").turn_written(9, 1, LATER),
    ]
    for written in writes:
        assert (written.version, written.update_time, written.etag) == (5, LATER, "s1:5")
        assert written.create_time == T0
    # The value it was made from is unchanged: a write that is not saved changes nothing.
    assert (before.version, before.update_time) == (4, T0)


def test_an_illegal_transition_is_refused_and_names_what_is_allowed() -> None:
    with pytest.raises(FailedPrecondition) as error:
        session(Status.CREATED).moved(Transition.COMPLETE, LATER)
    assert reason(error) == "ILLEGAL_TRANSITION"
    assert error.value.metadata == {"status": "CREATED", "transition": "complete"}


@pytest.mark.parametrize("transition", [Transition.COMPLETE, Transition.FAIL, Transition.TERMINATE])
def test_a_session_ends_only_between_turns(transition: Transition) -> None:
    with pytest.raises(FailedPrecondition) as error:
        session(active_turn_id="t1").moved(transition, LATER)
    assert reason(error) == "TURN_IN_PROGRESS"
    assert error.value.metadata == {"turn_id": "t1", "session_id": "s1"}


def test_fail_keeps_its_error_message_other_moves_clear_it_and_resume_may_upgrade() -> None:
    failed = session().moved(Transition.FAIL, LATER, error_message="broken")
    assert (failed.status, failed.error_message) == (Status.FAILED, "broken")
    completed = session().moved(Transition.COMPLETE, LATER, error_message="ignored")
    assert (completed.status, completed.error_message) == (Status.COMPLETED, "")
    resumed = completed.moved(Transition.RESUME, LATER, config_revision=5)
    assert (resumed.status, resumed.config_revision) == (Status.ACTIVE, 5)
    assert completed.moved(Transition.RESUME, LATER).config_revision == 2


def test_messages_are_added_to_open_sessions_between_turns() -> None:
    assert session(Status.CREATED).with_message(message(4), LATER).message_count == 4
    with pytest.raises(FailedPrecondition) as closed:
        session(Status.COMPLETED).with_message(message(4), LATER)
    assert reason(closed) == "SESSION_CLOSED"
    with pytest.raises(FailedPrecondition) as busy:
        session(active_turn_id="t1").with_message(message(4), LATER)
    assert reason(busy) == "TURN_IN_PROGRESS"


def test_a_turn_begins_only_in_an_active_session_that_runs_none() -> None:
    running = session().turn_begun("t1", 8, 4, LATER)
    assert (running.active_turn_id, running.last_sequence, running.message_count) == ("t1", 8, 4)
    with pytest.raises(FailedPrecondition) as busy:
        running.turn_begun("t2", 9, 5, LATER)
    assert reason(busy) == "TURN_IN_PROGRESS"
    for status in (Status.CREATED, Status.COMPLETED, Status.FAILED, Status.TERMINATED):
        with pytest.raises(FailedPrecondition) as inactive:
            session(status).turn_begun("t1", 8, 4, LATER)
        assert reason(inactive) == "SESSION_NOT_ACTIVE"


def test_a_running_turn_advances_the_counters_and_its_end_frees_the_session() -> None:
    running = session(active_turn_id="t1")
    written = running.turn_written(12, 2, LATER)
    assert (written.active_turn_id, written.last_sequence, written.message_count) == ("t1", 12, 5)
    ended = written.turn_written(13, 0, LATER, ended=True)
    assert (ended.active_turn_id, ended.last_sequence, ended.message_count) == ("", 13, 5)
    ended.check_turn_can_begin()
