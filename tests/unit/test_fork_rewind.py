"""ForkSession and RewindSession use cases against the in-memory unit of work, and the
workspace copy a fork makes (in a temporary folder).

The cut rule is one function both use cases share; each is checked on its own, then
through the use cases.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from session_service.servicer import event_pb
from session_service.sessions.forks import SessionForks, check_cut, fork_point
from session_service.sessions.model import Message, Role, Session, Status, ToolCall
from session_service.storage.event_codec import decode, encode
from session_service.turns.log import NO_LEASE
from session_service.turns.model import Event, EventKind, SessionRewound, Turn, TurnStatus
from session_service.workspace import CopyLimits, Workspaces, WorkspaceTooLarge
from shared.auth.identity import Identity, act_as
from shared.auth.identity import Role as IdentityRole
from shared.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from shared.quotas import Quotas, TenantPolicy
from shared.visibility import Visibility
from tests.unit.session_fakes import FakeSessionDatabase

TENANT = "t1"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def message(
    sequence: int,
    role: Role,
    content: str = "",
    *,
    calls: tuple[str, ...] = (),
    result_of: str = "",
    turn_id: str = "",
) -> Message:
    return Message(
        message_id=f"m{sequence}",
        role=role,
        content=content or f"message {sequence}",
        sequence=sequence,
        create_time=T0 + timedelta(seconds=sequence),
        tool_calls=tuple(ToolCall(call, "read_file", "{}") for call in calls),
        tool_call_id=result_of,
        turn_id=turn_id,
    )


# user, assistant asking for two tools, both results, assistant answer, user, assistant.
TOOL_TRANSCRIPT = (
    message(1, Role.USER),
    message(2, Role.ASSISTANT, calls=("a", "b")),
    message(3, Role.TOOL, result_of="a"),
    message(4, Role.TOOL, result_of="b"),
    message(5, Role.ASSISTANT),
    message(6, Role.USER),
    message(7, Role.ASSISTANT),
)


def field_of(error: InvalidArgument) -> str:
    return error.violations[0].field


@pytest.mark.parametrize("cut", [0, 1, 4, 5, 6, 7])
def test_a_cut_outside_a_tool_exchange_is_allowed(cut: int) -> None:
    check_cut(TOOL_TRANSCRIPT, cut, "at_sequence")


@pytest.mark.parametrize(("cut", "call"), [(2, "a"), (3, "b")])
def test_a_cut_that_parts_a_call_from_its_result_names_the_call(cut: int, call: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_cut(TOOL_TRANSCRIPT, cut, "to_message_id")
    assert raised.value.reason == "CUT_SPLITS_TOOL_CALL"
    assert field_of(raised.value) == "to_message_id"
    assert raised.value.metadata["tool_call_id"] == call
    assert repr(call) in raised.value.message


def test_a_call_that_never_got_a_result_does_not_block_a_cut() -> None:
    # A cancelled turn can leave a call unanswered: no cut makes that worse.
    transcript = (message(1, Role.USER), message(2, Role.ASSISTANT, calls=("x",)))
    check_cut(transcript, 2, "at_sequence")


def test_a_later_call_reusing_an_id_is_its_own_call() -> None:
    transcript = (
        message(1, Role.ASSISTANT, calls=("same",)),
        message(2, Role.TOOL, result_of="same"),
        message(3, Role.ASSISTANT, calls=("same",)),
        message(4, Role.TOOL, result_of="same"),
    )
    check_cut(transcript, 2, "at_sequence")
    with pytest.raises(InvalidArgument):
        check_cut(transcript, 3, "at_sequence")


def session(
    session_id: str = "parent", *, count: int = 0, turn: str = "", **fields: Any
) -> Session:
    base = Session(
        session_id=session_id,
        config_id="cfg",
        config_revision=4,
        status=Status.ACTIVE,
        create_time=T0,
        update_time=T0,
        version=7,
        tags={"team": "core"},
        message_count=count,
        last_sequence=20,
        active_turn_id=turn,
        display_name="The parent",
        ttl_seconds=3600.0,
    )
    return dataclasses.replace(base, **fields)


def test_the_fork_point_of_a_running_turn_is_the_message_before_it() -> None:
    running = (*TOOL_TRANSCRIPT[:5], message(6, Role.USER, turn_id="t9"))
    parent = session(count=6, turn="t9")
    assert fork_point(parent, running, 0) == 5
    assert fork_point(parent, running, 4) == 4
    with pytest.raises(FailedPrecondition) as raised:
        fork_point(parent, running, 6)
    assert raised.value.reason == "TURN_IN_PROGRESS"
    assert raised.value.metadata["turn_id"] == "t9"


@pytest.mark.parametrize("at", [-1, 8])
def test_a_fork_point_outside_the_transcript_is_invalid(at: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        fork_point(session(count=7), TOOL_TRANSCRIPT, at)
    assert field_of(raised.value) == "at_sequence"


async def seed(
    database: FakeSessionDatabase, parent: Session, messages: tuple[Message, ...]
) -> None:
    async with database.unit_of_work(write=True) as uow:
        await uow.sessions.insert(TENANT, parent)
        for each in messages:
            await uow.messages.append(TENANT, parent.session_id, each)
        await uow.commit()


async def stored(database: FakeSessionDatabase, session_id: str) -> tuple[Session, list[Message]]:
    async with database.unit_of_work() as uow:
        found = await uow.sessions.get(TENANT, session_id)
        messages = await uow.messages.page(TENANT, session_id, 0, 100)
    assert found is not None
    return found, messages


@pytest.fixture
async def database() -> FakeSessionDatabase:
    db = FakeSessionDatabase()
    await seed(db, session(count=7), TOOL_TRANSCRIPT)
    return db


async def test_a_fork_copies_the_transcript_up_to_the_point_and_the_settings(
    database: FakeSessionDatabase,
) -> None:
    forks = SessionForks(database.unit_of_work)
    fork = await forks.fork(TENANT, "parent", at_sequence=5, new_session_id="child")

    assert fork.session_id == "child"
    assert (fork.config_id, fork.config_revision) == ("cfg", 4)
    assert (fork.status, fork.version, fork.message_count, fork.last_sequence) == (
        Status.ACTIVE,
        1,
        5,
        0,
    )
    assert (fork.forked_from_session_id, fork.forked_from_sequence) == ("parent", 5)
    assert fork.tags == {"team": "core"}
    assert fork.display_name == "The parent"
    assert fork.ttl_seconds == 3600.0
    assert fork.idle_expire_time is not None
    assert fork.create_time > T0

    kept, messages = await stored(database, "child")
    assert kept == fork
    assert [(m.sequence, m.role, m.content, m.tool_call_id) for m in messages] == [
        (m.sequence, m.role, m.content, m.tool_call_id) for m in TOOL_TRANSCRIPT[:5]
    ]
    assert [m.tool_calls for m in messages] == [m.tool_calls for m in TOOL_TRANSCRIPT[:5]]
    assert not {m.message_id for m in messages} & {m.message_id for m in TOOL_TRANSCRIPT}

    parent, parent_messages = await stored(database, "parent")
    assert parent == session(count=7)
    assert parent_messages == list(TOOL_TRANSCRIPT)
    assert database.events(TENANT, "child") == []


async def test_a_fork_takes_the_request_tags_and_refuses_what_would_part_a_call(
    database: FakeSessionDatabase,
) -> None:
    forks = SessionForks(database.unit_of_work)
    fork = await forks.fork(TENANT, "parent", tags={"kind": "experiment"})
    assert fork.tags == {"kind": "experiment"}
    assert fork.message_count == 7
    with pytest.raises(InvalidArgument) as raised:
        await forks.fork(TENANT, "parent", at_sequence=3)
    assert field_of(raised.value) == "at_sequence"


async def test_a_fork_of_an_unknown_session_or_onto_a_taken_id_is_refused(
    database: FakeSessionDatabase,
) -> None:
    forks = SessionForks(database.unit_of_work)
    with pytest.raises(NotFound):
        await forks.fork(TENANT, "nobody")
    with pytest.raises(NotFound):
        await forks.fork("other-tenant", "parent")
    with pytest.raises(AlreadyExists):
        await forks.fork(TENANT, "parent", new_session_id="parent")
    with pytest.raises(InvalidArgument) as raised:
        await forks.fork(TENANT, "parent", new_session_id="../escape")
    assert field_of(raised.value) == "new_session_id"


async def test_a_fork_of_an_ended_session_is_active(database: FakeSessionDatabase) -> None:
    async with database.unit_of_work(write=True) as uow:
        await uow.sessions.save(
            TENANT, session(count=7, status=Status.COMPLETED, completion_reason="IDLE_TIMEOUT")
        )
        await uow.commit()
    fork = await SessionForks(database.unit_of_work).fork(TENANT, "parent")
    assert (fork.status, fork.completion_reason) == (Status.ACTIVE, "")


async def test_a_repeated_request_id_returns_the_first_fork(
    database: FakeSessionDatabase,
) -> None:
    forks = SessionForks(database.unit_of_work)
    first = await forks.fork(TENANT, "parent", at_sequence=1, request_id="r1")
    again = await forks.fork(TENANT, "parent", at_sequence=1, request_id="r1")
    assert again == first
    async with database.unit_of_work() as uow:
        assert await uow.sessions.count(TENANT, []) == 2
    with pytest.raises(InvalidArgument):
        await forks.fork(TENANT, "parent", at_sequence=5, request_id="r1")


async def test_a_repeated_request_id_shows_a_private_fork_only_to_whom_may_see_it() -> None:
    database = FakeSessionDatabase()
    owner = Identity(TENANT, IdentityRole.WRITER, "owner", team="a")
    other = Identity(TENANT, IdentityRole.WRITER, "other", team="b")
    await seed(database, session(count=7, owner="owner", visibility=Visibility.PRIVATE), ())
    forks = SessionForks(database.unit_of_work)
    token = act_as(owner)
    try:
        first = await forks.fork(TENANT, "parent", request_id="r1")
    finally:
        token.var.reset(token)
    token = act_as(other)
    try:
        # The same request from another caller: the first response is not theirs to see.
        with pytest.raises(NotFound):
            await forks.fork(TENANT, "parent", request_id="r1")
    finally:
        token.var.reset(token)
    async with database.unit_of_work() as uow:
        assert await uow.sessions.get(TENANT, first.session_id) == first
        assert await uow.sessions.count(TENANT, []) == 2


async def test_a_fork_counts_against_the_sessions_quota(database: FakeSessionDatabase) -> None:
    def policy(tenant_id: str) -> TenantPolicy:
        return TenantPolicy(quotas=Quotas(sessions=2))

    forks = SessionForks(database.unit_of_work, policies=policy)
    await forks.fork(TENANT, "parent")
    with pytest.raises(ResourceExhausted):
        await forks.fork(TENANT, "parent", new_session_id="third")
    async with database.unit_of_work() as uow:
        assert await uow.sessions.get(TENANT, "third") is None
        assert await uow.messages.page(TENANT, "third", 0, 10) == []


async def test_a_rewind_cuts_the_transcript_and_logs_it(database: FakeSessionDatabase) -> None:
    forks = SessionForks(database.unit_of_work)
    before, _ = await stored(database, "parent")
    rewound = await forks.rewind(TENANT, "parent", "m5", etag=before.etag)

    assert (rewound.message_count, rewound.version, rewound.last_sequence) == (5, 8, 21)
    assert rewound.update_time > before.update_time
    after, messages = await stored(database, "parent")
    assert after == rewound
    assert [m.sequence for m in messages] == [1, 2, 3, 4, 5]
    (event,) = database.events(TENANT, "parent")
    assert (event.sequence, event.turn_id) == (21, "")
    assert event.body == SessionRewound("m5", 5, 2)


async def test_a_rewind_is_refused_on_a_stale_etag_an_unknown_message_or_a_split_call(
    database: FakeSessionDatabase,
) -> None:
    forks = SessionForks(database.unit_of_work)
    with pytest.raises(Aborted) as stale:
        await forks.rewind(TENANT, "parent", "m5", etag="parent:6")
    assert stale.value.reason == "ETAG_MISMATCH"
    with pytest.raises(NotFound) as unknown:
        await forks.rewind(TENANT, "parent", "m99")
    assert unknown.value.reason == "MESSAGE_NOT_FOUND"
    with pytest.raises(InvalidArgument) as split:
        await forks.rewind(TENANT, "parent", "m3")
    assert field_of(split.value) == "to_message_id"
    assert (await stored(database, "parent"))[0] == session(count=7)
    assert database.events(TENANT, "parent") == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"active_turn_id": "t9"}, "TURN_IN_PROGRESS"),
        ({"status": Status.COMPLETED}, "SESSION_CLOSED"),
    ],
)
async def test_a_rewind_waits_for_the_turn_and_needs_an_open_session(
    database: FakeSessionDatabase, changes: dict[str, Any], reason: str
) -> None:
    async with database.unit_of_work(write=True) as uow:
        await uow.sessions.save(TENANT, session(count=7, **changes))
        await uow.turns.insert(TENANT, waiting_turn("t9"))
        await uow.commit()
    with pytest.raises(FailedPrecondition) as raised:
        await SessionForks(database.unit_of_work).rewind(TENANT, "parent", "m5")
    assert raised.value.reason == reason
    assert len((await stored(database, "parent"))[1]) == 7


def waiting_turn(turn_id: str) -> Turn:
    """A turn paused for approvals: it holds no lease, so nothing fails it as abandoned."""
    return Turn(
        session_id="parent",
        turn_id=turn_id,
        request_id="",
        status=TurnStatus.WAITING,
        first_sequence=21,
        last_sequence=21,
        cancel_requested=False,
        runner="",
        lease_expires=NO_LEASE,
        create_time=T0,
    )


# ---- the workspace copy ------------------------------------------------------------------


def test_a_staged_copy_holds_files_and_folders_but_no_links_or_special_files(
    tmp_path: Path,
) -> None:
    workspaces = Workspaces(tmp_path / "ws")
    source = workspaces.sandbox(TENANT, "parent")
    (source.workspace / "notes").mkdir()
    (source.workspace / "notes" / "a.txt").write_text("alpha")
    script = source.workspace / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert source.state is not None
    (source.state / "todo.json").write_text("[]")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (source.workspace / "escape").symlink_to(secret)
    (source.workspace / "dir-escape").symlink_to(tmp_path)
    os.mkfifo(source.workspace / "pipe")

    staged = workspaces.stage_copy(TENANT, "parent", "parent")
    workspaces.place(staged, TENANT, "child")

    copy = workspaces.path(TENANT, "child")
    found = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    assert found == ["notes", "notes/a.txt", "run.sh"]
    assert (copy / "notes" / "a.txt").read_text() == "alpha"
    assert (copy / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (workspaces.state_path(TENANT, "child") / "todo.json").read_text() == "[]"
    assert not staged.exists()
    # The copy is separate: a write in one is not seen in the other.
    (copy / "notes" / "a.txt").write_text("changed")
    assert (source.workspace / "notes" / "a.txt").read_text() == "alpha"


def test_a_workspace_over_a_limit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    workspaces = Workspaces(tmp_path / "ws")
    source = workspaces.sandbox(TENANT, "parent")
    (source.workspace / "big.bin").write_bytes(b"x" * 5000)
    for limits, unit in (
        (CopyLimits(max_bytes=4096), "bytes"),
        (CopyLimits(max_entries=0), "files and folders"),
    ):
        with pytest.raises(WorkspaceTooLarge) as raised:
            workspaces.stage_copy(TENANT, "parent", "parent", limits)
        assert raised.value.what == unit
    assert list((workspaces.root / TENANT / ".forks").iterdir()) == []


async def test_a_fork_over_the_copy_limit_is_resource_exhausted_and_stores_nothing(
    database: FakeSessionDatabase, tmp_path: Path
) -> None:
    workspaces = Workspaces(tmp_path / "ws")
    (workspaces.sandbox(TENANT, "parent").workspace / "big.bin").write_bytes(b"x" * 5000)
    forks = SessionForks(
        database.unit_of_work, workspaces=workspaces, copy_limits=CopyLimits(max_bytes=1000)
    )
    with pytest.raises(ResourceExhausted) as raised:
        await forks.fork(TENANT, "parent", new_session_id="child")
    assert raised.value.reason == "WORKSPACE_TOO_LARGE"
    assert raised.value.violations[0].subject == "sessions/parent/workspace"
    async with database.unit_of_work() as uow:
        assert await uow.sessions.get(TENANT, "child") is None
    assert not workspaces.path(TENANT, "child").exists()


async def test_a_fork_whose_write_fails_removes_its_copied_files(
    database: FakeSessionDatabase, tmp_path: Path
) -> None:
    workspaces = Workspaces(tmp_path / "ws")
    (workspaces.sandbox(TENANT, "parent").workspace / "a.txt").write_text("alpha")
    forks = SessionForks(database.unit_of_work, workspaces=workspaces)
    # The id is taken: the insert fails after the copy was staged.
    with pytest.raises(AlreadyExists):
        await forks.fork(TENANT, "parent", new_session_id="parent")
    assert (workspaces.path(TENANT, "parent") / "a.txt").read_text() == "alpha"
    assert list((workspaces.root / TENANT / ".forks").iterdir()) == []

    fork = await forks.fork(TENANT, "parent", new_session_id="child")
    assert (workspaces.path(TENANT, fork.session_id) / "a.txt").read_text() == "alpha"


def test_session_rewound_is_stored_and_sent_as_its_own_kind() -> None:
    body = SessionRewound("m5", 5, 2)
    payload = encode(body)
    assert payload == {"to_message_id": "m5", "to_sequence": 5, "removed_messages": 2, "v": 1}
    assert decode(EventKind.SESSION_REWOUND, json.loads(json.dumps(payload))) == body
    wire = event_pb(Event(21, "", body, T0))
    assert (wire.WhichOneof("event"), wire.turn_id) == ("session_rewound", "")
    assert (wire.session_rewound.to_message_id, wire.session_rewound.removed_messages) == (
        "m5",
        2,
    )


async def test_a_fork_of_an_agent_session_copies_the_files_it_works_in(tmp_path: Path) -> None:
    # An agent's child session works in the workspace of the session that started the chain;
    # its state folder (the todo list) is its own.
    database = FakeSessionDatabase()
    await seed(database, session("root"), ())
    await seed(database, session("child", parent_session_id="root", agent="scribe"), ())
    workspaces = Workspaces(tmp_path / "ws")
    (workspaces.sandbox(TENANT, "root").workspace / "shared.txt").write_text("team work")
    state = workspaces.sandbox(TENANT, "child", "root").state
    assert state is not None
    (state / "todo.json").write_text('["child"]')

    fork = await SessionForks(database.unit_of_work, workspaces=workspaces).fork(TENANT, "child")
    assert (fork.parent_session_id, fork.agent) == ("", "scribe")
    assert (workspaces.path(TENANT, fork.session_id) / "shared.txt").read_text() == "team work"
    assert (workspaces.state_path(TENANT, fork.session_id) / "todo.json").read_text() == (
        '["child"]'
    )
