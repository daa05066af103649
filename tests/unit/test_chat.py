"""SendMessage's use case over the in-memory unit of work: to a session, or to a config."""

from __future__ import annotations

import dataclasses

import pytest

from session_service.sessions.model import Status
from session_service.sessions.service import SessionService
from session_service.turns.chat import Chat
from session_service.turns.model import SessionCreated, TurnStarted
from session_service.turns.service import TurnOptions, TurnService
from session_service.turns.signals import TurnSignals
from shared.errors import InvalidArgument
from tests.unit.session_fakes import FakeSessionDatabase, RecordingRunner, StubPreparer

TENANT = "t1"


@pytest.fixture
def database() -> FakeSessionDatabase:
    return FakeSessionDatabase()


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def chat(database: FakeSessionDatabase, runner: RecordingRunner) -> Chat:
    sessions = SessionService(database.unit_of_work, StubPreparer())
    turns = TurnService(database.unit_of_work, runner, TurnSignals(), TurnOptions())
    return Chat(sessions, turns)


async def test_a_message_to_a_config_makes_a_session_whose_log_opens_with_it(
    chat: Chat, database: FakeSessionDatabase, runner: RecordingRunner
) -> None:
    sent = await chat.send(TENANT, "hello", config_id="cfg", request_id="r1")

    (session,) = database.state.sessions.values()
    assert session.session_id == sent.session_id
    assert session.status is Status.ACTIVE
    created, started = database.events(TENANT, sent.session_id)
    assert isinstance(created.body, SessionCreated)
    assert created.sequence == 1
    assert isinstance(started.body, TurnStarted)
    assert started.turn_id == sent.accepted.turn_id
    assert [job.turn_id for job in runner.jobs] == [sent.accepted.turn_id]

    # A retry finds the same session and turn, and runs nothing more.
    again = await chat.send(TENANT, "hello", config_id="cfg", request_id="r1")
    assert (again.session_id, again.accepted.turn_id) == (
        sent.session_id,
        sent.accepted.turn_id,
    )
    assert len(database.state.sessions) == 1
    assert len(runner.jobs) == 1


async def test_a_message_to_a_session_makes_none(chat: Chat, database: FakeSessionDatabase) -> None:
    first = await chat.send(TENANT, "one", config_id="cfg")
    # The turn ends elsewhere; then a message to the session itself.
    key = (TENANT, first.session_id)
    database.state.sessions[key] = dataclasses.replace(
        database.state.sessions[key], active_turn_id=""
    )
    second = await chat.send(TENANT, "two", session_id=first.session_id)
    assert second.session_id == first.session_id
    assert len(database.state.sessions) == 1


@pytest.mark.parametrize(
    ("target", "fields"),
    [
        ({"session_id": "s1", "config_id": "cfg"}, ["config_id"]),
        ({}, ["session_id", "config_id"]),
        ({"session_id": "s1", "config_revision": 2}, ["config_revision"]),
        ({"session_id": "s1", "overrides": "tools: []"}, ["overrides"]),
    ],
)
async def test_the_target_must_be_one_session_or_one_config(
    chat: Chat, database: FakeSessionDatabase, target: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await chat.send(TENANT, "hello", **target)  # type: ignore[arg-type]
    assert [v.field for v in refused.value.violations] == fields
    assert database.state.sessions == {}


async def test_a_refused_message_to_a_config_leaves_no_session(
    chat: Chat, database: FakeSessionDatabase
) -> None:
    with pytest.raises(InvalidArgument):
        await chat.send(TENANT, "x" * 300_000, config_id="cfg")
    assert database.state.sessions == {}
