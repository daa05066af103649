"""ForkSession and RewindSession through real stubs, on both databases.

Forks keep the transcript up to their point, the pinned config revision and a copy of the
files; their own log starts at 1. A rewind cuts the transcript, so the next turn's model
request (read off a local OpenAI-compatible server) lacks what was removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tandem_client import AsyncTandem
from tests.support.llm_servers import (
    LlmServer,
    llm_server,
    openai_done,
    openai_provider,
    openai_text_reply,
    stream,
)
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rpc_error
from tests.support.turns import (
    bundle,
    collect,
    get_session,
    kinds,
    next_event,
    send,
    transcript,
)

WRITER_SCRIPT = [
    {"tool_calls": [{"name": "write_file", "arguments": {"path": "notes.txt", "content": "v1"}}]},
    {"reply": "Noted."},
]


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def workspace(session_id: str) -> Path:
    """Where the session's files are (tenant "default", under the tests' workspace root)."""
    return Path(os.environ["TANDEM_WORKSPACE_ROOT"]) / "default" / session_id


async def store_config(stack: Stack, document: str, name: str) -> None:
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=name, config=config_pb2.Config(name=name, yaml_content=document)
        )
    )


async def start_session(stack: Stack, name: str) -> str:
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=name, start=True)
    )
    return str(created.session_id)


def fork(stack: Stack, session_id: str, **fields: Any) -> Any:
    return stack.sessions.ForkSession(
        session_service_pb2.ForkSessionRequest(session_id=session_id, **fields)
    )


def rewind(stack: Stack, session_id: str, to_message_id: str, etag: str = "") -> Any:
    return stack.sessions.RewindSession(
        session_service_pb2.RewindSessionRequest(
            session_id=session_id, to_message_id=to_message_id, etag=etag
        )
    )


def shape(messages: list[session_pb2.Message]) -> list[tuple[Any, ...]]:
    """What a transcript says, without ids and times."""
    return [
        (
            m.sequence,
            m.role,
            m.content,
            [(c.tool_call_id, c.name, c.arguments_json) for c in m.tool_calls],
            m.tool_call_id,
        )
        for m in messages
    ]


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]


async def writer_session(stack: Stack) -> str:
    """A session whose two turns each wrote notes.txt: eight messages (user, call, result,
    reply, twice), on config "writer" at revision 1 while the config is at revision 2."""
    await store_config(
        stack, bundle({"script": WRITER_SCRIPT}, tools=[{"module": "tool-filesystem"}]), "writer"
    )
    session_id = await start_session(stack, "writer")
    for content in ("first", "second"):
        events = await collect(send(stack.sessions, session_id, content))
        assert kinds(events)[-1] == "turn_completed"
    await stack.configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(
                config_id="writer", yaml_content=bundle({"reply": "a later revision"})
            )
        )
    )
    return session_id


async def test_forks_at_the_start_the_middle_and_the_end(stack: Stack) -> None:
    parent_id = await writer_session(stack)
    parent = await get_session(stack, parent_id)
    parent_messages = await transcript(stack, parent_id)
    assert parent.message_count == 8

    for at, kept in ((1, 1), (4, 4), (0, 8)):
        forked = await fork(stack, parent_id, at_sequence=at)
        assert forked.session_id != parent_id
        assert (forked.forked_from.session_id, forked.forked_from.sequence) == (parent_id, kept)
        assert (forked.config_id, forked.config_revision) == ("writer", 1)
        assert forked.status == session_pb2.SESSION_STATUS_ACTIVE
        assert (forked.message_count, forked.last_sequence, forked.parent_session_id) == (
            kept,
            0,
            "",
        )
        assert forked.tags == parent.tags
        assert forked == await get_session(stack, forked.session_id)
        assert shape(await transcript(stack, forked.session_id)) == shape(parent_messages[:kept])

        # Its own log: the first turn's TurnStarted is event 1, its message follows the cut.
        events = await collect(send(stack.sessions, forked.session_id, "and now?"))
        assert (kinds(events)[0], events[0].sequence) == ("turn_started", 1)
        assert events[0].turn_started.user_message.sequence == kept + 1
        assert kinds(events)[-1] == "turn_completed"
        assert len(await transcript(stack, forked.session_id)) == kept + 4

    # A point that parts the first tool call from its result is refused, naming the call.
    error = await rpc_error(fork(stack, parent_id, at_sequence=2))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(error) == ["at_sequence"]
    assert (
        error_info(error).metadata["tool_call_id"] == parent_messages[1].tool_calls[0].tool_call_id
    )
    for beyond in (9, -1):
        error = await rpc_error(fork(stack, parent_id, at_sequence=beyond))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == ["at_sequence"]

    # The parent is as it was.
    assert await get_session(stack, parent_id) == parent
    assert await transcript(stack, parent_id) == parent_messages


async def test_a_fork_copies_the_workspace_apart_from_the_parent(stack: Stack) -> None:
    parent_id = await writer_session(stack)
    assert (workspace(parent_id) / "notes.txt").read_text() == "v1"

    forked = await fork(stack, parent_id, new_session_id="the-fork", tags={"kind": "copy"})
    assert (forked.session_id, dict(forked.tags)) == ("the-fork", {"kind": "copy"})
    assert (workspace("the-fork") / "notes.txt").read_text() == "v1"

    # Two workspaces from here on: a write in one is not seen in the other.
    (workspace("the-fork") / "notes.txt").write_text("fork")
    (workspace(parent_id) / "parent-only.txt").write_text("parent")
    assert (workspace(parent_id) / "notes.txt").read_text() == "v1"
    assert not (workspace("the-fork") / "parent-only.txt").exists()

    taken = await rpc_error(fork(stack, parent_id, new_session_id="the-fork"))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (workspace("the-fork") / "notes.txt").read_text() == "fork"


async def test_a_link_out_of_the_parent_workspace_is_not_followed_into_the_fork(
    stack: Stack, tmp_path: Path
) -> None:
    reader = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "escape"}}]},
        {"reply": "Read."},
    ]
    # The test's folder is one the operator lets tools reach, and this bundle reads there:
    # only the workspace copy stands between the fork and the secret.
    tool = {"module": "tool-filesystem", "config": {"allowed_read_paths": [".", str(tmp_path)]}}
    await store_config(stack, bundle({"script": reader}, tools=[tool]), "reader")
    parent_id = await start_session(stack, "reader")
    secret = tmp_path / "secret.txt"
    secret.write_text("never in a fork")
    workspace(parent_id).mkdir(parents=True, exist_ok=True)
    (workspace(parent_id) / "escape").symlink_to(secret)
    (workspace(parent_id) / "kept.txt").write_text("plain")
    # The parent reaches the secret through its link.
    events = await collect(send(stack.sessions, parent_id, "read it"))
    [completed] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert (completed.is_error, completed.result) == (False, "never in a fork")

    forked = await fork(stack, parent_id)
    copy = workspace(forked.session_id)
    assert sorted(p.name for p in copy.iterdir()) == ["kept.txt"]
    assert all("never in a fork" not in p.read_text() for p in copy.rglob("*") if p.is_file())

    events = await collect(send(stack.sessions, forked.session_id, "read it"))
    [completed] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert completed.is_error
    assert "never in a fork" not in completed.result


async def test_a_retried_fork_returns_the_same_session(stack: Stack) -> None:
    parent_id = await writer_session(stack)
    first = await fork(stack, parent_id, at_sequence=4, request_id="fork-1")
    again = await fork(stack, parent_id, at_sequence=4, request_id="fork-1")
    assert again == first
    listed = await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
    assert sorted(s.session_id for s in listed.sessions) == sorted([parent_id, first.session_id])

    reused = await rpc_error(fork(stack, parent_id, at_sequence=1, request_id="fork-1"))
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = await rpc_error(fork(stack, "no-such-session"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def openai_document(server: LlmServer) -> str:
    body = {
        "bundle": {"name": "chat"},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [openai_provider(server)],
    }
    return f"---\n{json.dumps(body)}\n---\nYou chat.\n"


async def chat_session(stack: Stack, server: LlmServer, *answers: str) -> str:
    """An OpenAI-provider session that has had one turn per answer ("question N" asked)."""
    await store_config(stack, openai_document(server), "chat")
    session_id = await start_session(stack, "chat")
    for number, answer in enumerate(answers, 1):
        server.script(stream(openai_text_reply([answer])))
        events = await collect(send(stack.sessions, session_id, f"question {number}"))
        assert kinds(events)[-1] == "turn_completed"
    return session_id


def conversation_sent(server: LlmServer, index: int) -> list[str]:
    """The user and assistant messages of the index-th model request."""
    messages = server.requests[index].body["messages"]
    return [str(m["content"]) for m in messages if m["role"] in ("user", "assistant")]


async def test_after_a_rewind_the_next_turn_does_not_see_the_removed_messages(
    stack: Stack, server: LlmServer
) -> None:
    session_id = await chat_session(stack, server, "answer 1", "answer 2")
    before = await get_session(stack, session_id)
    messages = await transcript(stack, session_id)
    assert [m.content for m in messages] == ["question 1", "answer 1", "question 2", "answer 2"]

    rewound = await rewind(stack, session_id, messages[1].message_id, etag=before.etag)
    assert rewound.message_count == 2
    assert rewound.last_sequence == before.last_sequence + 1
    assert rewound.etag != before.etag
    assert rewound == await get_session(stack, session_id)
    assert [m.content for m in await transcript(stack, session_id)] == ["question 1", "answer 1"]

    # The log keeps the removed turn and records the rewind, in no turn.
    logged = await collect(
        stack.sessions.StreamEvents(session_service_pb2.StreamEventsRequest(session_id=session_id))
    )
    asked = [e.turn_started.user_message.content for e in logged if e.HasField("turn_started")]
    assert asked == ["question 1", "question 2"]
    last = logged[-1]
    assert (kinds([last]), last.sequence, last.turn_id) == (
        ["session_rewound"],
        rewound.last_sequence,
        "",
    )
    assert (
        last.session_rewound.to_message_id,
        last.session_rewound.to_sequence,
        last.session_rewound.removed_messages,
    ) == (messages[1].message_id, 2, 2)

    server.script(stream(openai_text_reply(["answer 3"])))
    events = await collect(send(stack.sessions, session_id, "question 3"))
    assert events[0].turn_started.user_message.sequence == 3
    assert kinds(events)[-1] == "turn_completed"
    assert conversation_sent(server, 2) == ["question 1", "answer 1", "question 3"]


async def test_a_rewind_with_a_stale_etag_or_an_unknown_message_changes_nothing(
    stack: Stack, server: LlmServer
) -> None:
    session_id = await chat_session(stack, server, "answer 1")
    before = await get_session(stack, session_id)
    first = (await transcript(stack, session_id))[0]

    stale = await rpc_error(rewind(stack, session_id, first.message_id, etag=f"{session_id}:1"))
    assert stale.code() == grpc.StatusCode.ABORTED
    assert error_info(stale).reason == "ETAG_MISMATCH"
    unknown = await rpc_error(rewind(stack, session_id, "no-such-message"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    missing = await rpc_error(rewind(stack, session_id, ""))
    assert fields_of(missing) == ["to_message_id"]
    assert await get_session(stack, session_id) == before
    assert len(await transcript(stack, session_id)) == 2


async def test_during_a_turn_a_fork_takes_the_finished_messages_and_a_rewind_waits(
    stack: Stack, server: LlmServer
) -> None:
    session_id = await chat_session(stack, server, "answer 1")
    first_two = await transcript(stack, session_id)
    # The model never answers: the turn runs until it is cancelled.
    server.script(stream([openai_done(delay=60)]))
    call = send(stack.sessions, session_id, "question 2")
    started = await next_event(call)
    assert kinds([started]) == ["turn_started"]
    turn_id = started.turn_id

    forked = await fork(stack, session_id)
    assert (forked.forked_from.sequence, forked.message_count) == (2, 2)
    assert shape(await transcript(stack, forked.session_id)) == shape(first_two)

    inside = await rpc_error(fork(stack, session_id, at_sequence=3))
    assert inside.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(inside).reason == "TURN_IN_PROGRESS"
    assert error_info(inside).metadata["turn_id"] == turn_id

    refused = await rpc_error(rewind(stack, session_id, first_two[0].message_id))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(refused).reason == "TURN_IN_PROGRESS"

    await stack.sessions.CancelTurn(session_service_pb2.CancelTurnRequest(session_id=session_id))
    assert kinds(await collect(call))[-1] == "turn_cancelled"
    # The fork runs its own turns meanwhile, from its own log.
    server.script(stream(openai_text_reply(["forked answer"])))
    events = await collect(send(stack.sessions, forked.session_id, "question 2, again"))
    assert (events[0].sequence, kinds(events)[-1]) == (1, "turn_completed")
    assert conversation_sent(server, len(server.requests) - 1) == [
        "question 1",
        "answer 1",
        "question 2, again",
    ]


async def test_the_python_client_forks_and_rewinds(stack: Stack) -> None:
    async with AsyncTandem(
        stack.config_app.server.address, session_target=stack.session_app.server.address
    ) as client:
        config = await client.configs.create("echo", bundle({"reply": "hi"}))
        session = await client.sessions.create(config.config_id, start=True)
        for content in ("one", "two"):
            assert (await client.sessions.reply(session.session_id, content)).text == "hi"
        first_reply = (await client.sessions.messages(session.session_id)).items[1]

        forked = await client.sessions.fork(session.session_id, at_sequence=2)
        assert (forked.forked_from_session_id, forked.forked_from_sequence) == (
            session.session_id,
            2,
        )
        current = await client.sessions.get(session.session_id)
        rewound = await client.sessions.rewind(
            session.session_id, first_reply.message_id, etag=current.etag
        )
        assert rewound.message_count == 2
        events = [e async for e in client.sessions.stream(session.session_id)]
        assert (events[-1].kind, events[-1].to_message_id, events[-1].removed_messages) == (
            "session_rewound",
            first_reply.message_id,
            2,
        )
