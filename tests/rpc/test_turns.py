"""Message turns through real stubs: streamed, durable, resumable, cancellable, one at a time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import (
    session_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from tests.support.pair import Stack, running_session_service
from tests.support.rpc import detail, error_info, rpc_error
from tests.support.turns import (
    Event,
    active_session,
    assert_gap_free,
    bundle,
    collect,
    get_session,
    kinds,
    next_event,
    send,
    text_of,
    transcript,
)

if TYPE_CHECKING:
    SessionStub = session_service_pb2_grpc.SessionServiceAsyncStub


REPLY = "The quick brown fox jumps over the lazy dog."


async def test_a_turn_streams_its_reply_and_stores_the_transcript(stack: Stack) -> None:
    session_id = await active_session(stack, bundle({"reply": REPLY}))
    events = await collect(send(stack.sessions, session_id, "hello"))
    assert kinds(events)[0] == "turn_started"
    assert kinds(events)[-1] == "turn_completed"
    assert kinds(events).count("content_delta") == len(REPLY.split())
    assert "usage" in kinds(events)
    assert_gap_free(events)
    assert events[0].sequence == 1
    assert {e.turn_id for e in events} == {events[0].turn_id}
    assert events[0].turn_started.user_message.content == "hello"
    done = events[-1].turn_completed
    assert text_of(events) == REPLY == done.message.content
    assert done.stop_reason == "end_turn"
    usage = next(e.usage for e in events if e.HasField("usage"))
    assert usage.output_tokens == len(REPLY.split())
    assert usage.provider == "provider-echo"
    messages = await transcript(stack, session_id)
    assert [(m.role, m.content) for m in messages] == [
        (session_pb2.ROLE_USER, "hello"),
        (session_pb2.ROLE_ASSISTANT, REPLY),
    ]
    assert {m.turn_id for m in messages} == {events[0].turn_id}
    session = await get_session(stack, session_id)
    assert session.last_sequence == events[-1].sequence
    assert session.message_count == 2
    assert session.active_turn_id == ""


async def test_the_basic_loop_sends_each_reply_as_one_delta(stack: Stack) -> None:
    session_id = await active_session(stack, bundle({"reply": REPLY}, orchestrator="loop-basic"))
    events = await collect(send(stack.sessions, session_id, "hello"))
    assert kinds(events).count("content_delta") == 1
    assert text_of(events) == REPLY


async def test_a_turn_with_two_tool_calls_logs_them_in_order_and_keeps_an_exact_transcript(
    stack: Stack, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    (root / "docs").mkdir(parents=True)
    (root / "note.txt").write_text("remember the milk")
    # The folder is an operator root (TANDEM_TOOL_ALLOWED_ROOTS in the tests), so it is
    # named by absolute path: relative paths are the session's workspace.
    calls = [
        {"name": "read_file", "arguments": {"path": str(root / "note.txt")}},
        {"name": "list_directory", "arguments": {"path": str(root)}},
    ]
    script = [
        {"reply": "Let me look. ", "tool_calls": calls},
        {"reply": "It says to remember the milk."},
    ]
    tools = [{"module": "tool-filesystem", "config": {"allowed_paths": [str(root)]}}]
    session_id = await active_session(stack, bundle({"script": script}, tools=tools))
    events = await collect(send(stack.sessions, session_id, "what does my note say?"))
    assert_gap_free(events)
    order = [k for k in kinds(events) if k not in ("content_delta", "usage")]
    assert order == [
        "turn_started",
        "tool_call_started",
        "tool_call_started",
        "tool_call_completed",
        "tool_call_completed",
        "turn_completed",
    ]
    started = [e.tool_call_started for e in events if e.HasField("tool_call_started")]
    completed = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert [(c.name, json.loads(c.arguments_json)) for c in started] == [
        (c["name"], c["arguments"]) for c in calls
    ]
    assert [c.tool_call_id for c in completed] == [c.tool_call_id for c in started]
    assert [(c.result, c.is_error) for c in completed] == [
        ("remember the milk", False),
        ("docs/\nnote.txt", False),
    ]
    assert text_of(events) == "Let me look. It says to remember the milk."
    messages = await transcript(stack, session_id)
    assert [
        (m.role, m.content, [(c.name, c.tool_call_id) for c in m.tool_calls], m.tool_call_id)
        for m in messages
    ] == [
        (session_pb2.ROLE_USER, "what does my note say?", [], ""),
        (
            session_pb2.ROLE_ASSISTANT,
            "Let me look. ",
            [(s.name, s.tool_call_id) for s in started],
            "",
        ),
        (session_pb2.ROLE_TOOL, "remember the milk", [], started[0].tool_call_id),
        (session_pb2.ROLE_TOOL, "docs/\nnote.txt", [], started[1].tool_call_id),
        (session_pb2.ROLE_ASSISTANT, "It says to remember the milk.", [], ""),
    ]
    assert [m.sequence for m in messages] == [1, 2, 3, 4, 5]
    assert events[-1].turn_completed.message.message_id == messages[-1].message_id


async def test_a_path_escape_is_a_tool_error_not_a_crash(stack: Stack, tmp_path: Path) -> None:
    script = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "../../etc/passwd"}}]},
        {"reply": "I cannot read that."},
    ]
    tools = [{"module": "tool-filesystem", "config": {"allowed_paths": [str(tmp_path)]}}]
    session_id = await active_session(stack, bundle({"script": script}, tools=tools))
    events = await collect(send(stack.sessions, session_id, "read it"))
    [completed] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert completed.is_error is True
    assert "root:" not in completed.result
    assert kinds(events)[-1] == "turn_completed"


async def test_max_iterations_ends_a_turn_that_keeps_calling_tools(stack: Stack) -> None:
    step = {"tool_calls": [{"name": "list_directory", "arguments": {"path": "."}}]}
    document = bundle(
        {"script": [step] * 5},
        tools=[{"module": "tool-filesystem", "config": {"allowed_paths": ["."]}}],
        orchestrator={"module": "loop-streaming", "config": {"max_iterations": 2}},
    )
    session_id = await active_session(stack, document)
    events = await collect(send(stack.sessions, session_id, "loop"))
    assert kinds(events).count("tool_call_started") == 2
    assert events[-1].turn_completed.stop_reason == "max_iterations"


async def test_a_provider_failure_ends_the_turn_with_turn_failed(stack: Stack) -> None:
    script = [
        {"reply": "Partial answer", "fail": {"code": "PROVIDER_UNAVAILABLE", "message": "down"}}
    ]
    session_id = await active_session(stack, bundle({"script": script}))
    events = await collect(send(stack.sessions, session_id, "hi"))
    assert kinds(events)[-1] == "turn_failed"
    assert events[-1].turn_failed.code == "PROVIDER_UNAVAILABLE"
    assert events[-1].turn_failed.message == "down"
    # The session is free again, and what was said before the failure is kept.
    assert (await get_session(stack, session_id)).active_turn_id == ""
    assert (await transcript(stack, session_id))[-1].content == "Partial answer"


async def test_a_second_message_while_a_turn_runs_names_the_running_turn(stack: Stack) -> None:
    session_id = await active_session(stack, bundle({"script": [{"reply": "wait", "stall": True}]}))
    first = send(stack.sessions, session_id, "one")
    started = await next_event(first)
    error = await rpc_error(collect(send(stack.sessions, session_id, "two")))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(error)
    assert info.reason == "TURN_IN_PROGRESS"
    assert info.metadata["turn_id"] == started.turn_id
    assert detail(error, error_details_pb2.PreconditionFailure).violations[0].type == (
        "TURN_IN_PROGRESS"
    )
    await stack.sessions.CancelTurn(session_service_pb2.CancelTurnRequest(session_id=session_id))
    first.cancel()


async def test_messages_need_an_active_session_and_content(stack: Stack) -> None:
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="idle", config=config_pb2.Config(name="idle", yaml_content=bundle({}))
        )
    )
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="idle")
    )
    error = await rpc_error(collect(send(stack.sessions, created.session_id, "hi")))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "SESSION_NOT_ACTIVE"
    session_id = await active_session(stack, bundle({}), name="live")
    empty = await rpc_error(collect(send(stack.sessions, session_id, "   ")))
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT
    missing = await rpc_error(collect(send(stack.sessions, "nope", "hi")))
    assert missing.code() is grpc.StatusCode.NOT_FOUND


async def test_a_retry_with_the_same_request_id_reattaches_instead_of_running_again(
    stack: Stack,
) -> None:
    session_id = await active_session(stack, bundle({"reply": REPLY, "delay_ms": 20}))
    first = send(stack.sessions, session_id, "hello", request_id="req-1")
    head = [await next_event(first) for _ in range(3)]
    first.cancel()  # the client drops; the turn goes on
    retried = await collect(send(stack.sessions, session_id, "hello", request_id="req-1"))
    assert retried[0].turn_started.request_id == "req-1"
    assert retried[0].sequence == head[0].sequence
    assert [e.sequence for e in retried[:3]] == [e.sequence for e in head]
    assert {e.turn_id for e in retried} == {head[0].turn_id}
    assert text_of(retried) == REPLY
    assert_gap_free(retried)
    # Run once: one user message, one reply.
    assert len(await transcript(stack, session_id)) == 2
    again = await collect(send(stack.sessions, session_id, "hello", request_id="req-1"))
    assert [e.sequence for e in again] == [e.sequence for e in retried]


async def test_a_request_id_reused_for_another_message_is_refused(stack: Stack) -> None:
    session_id = await active_session(stack, bundle({"reply": "ok"}))
    first = await collect(send(stack.sessions, session_id, "hello", request_id="req-9"))
    error = await rpc_error(
        collect(send(stack.sessions, session_id, "goodbye", request_id="req-9"))
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info.reason == "REQUEST_ID_REUSED"
    assert info.metadata["turn_id"] == first[0].turn_id
    violations = detail(error, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["request_id"]
    # Nothing ran for it: the transcript holds the first exchange only.
    assert [m.content for m in await transcript(stack, session_id)] == ["hello", "ok"]


async def test_a_turn_goes_on_after_its_client_leaves_and_stream_events_resumes_it(
    stack: Stack,
) -> None:
    session_id = await active_session(stack, bundle({"reply": REPLY, "delay_ms": 20}))
    call = send(stack.sessions, session_id, "hello")
    seen = [await next_event(call) for _ in range(4)]
    call.cancel()
    resumed = await collect(
        stack.sessions.StreamEvents(
            session_service_pb2.StreamEventsRequest(
                session_id=session_id, after_sequence=seen[-1].sequence
            )
        )
    )
    whole = [*seen, *resumed]
    assert_gap_free(whole)
    assert kinds(whole)[-1] == "turn_completed"
    assert text_of(whole) == REPLY
    # Replaying from the start gives the same log; past the end is OUT_OF_RANGE.
    replay = await collect(
        stack.sessions.StreamEvents(session_service_pb2.StreamEventsRequest(session_id=session_id))
    )
    assert [e.sequence for e in replay] == [e.sequence for e in whole]
    error = await rpc_error(
        collect(
            stack.sessions.StreamEvents(
                session_service_pb2.StreamEventsRequest(
                    session_id=session_id, after_sequence=whole[-1].sequence + 1
                )
            )
        )
    )
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert error_info(error).metadata["last_sequence"] == str(whole[-1].sequence)


async def test_cancel_stops_a_stalled_turn_and_keeps_the_partial_reply(stack: Stack) -> None:
    # The provider never finishes on its own: only the cancel can end this turn.
    script = [{"reply": "I was about to say", "stall": True}]
    session_id = await active_session(stack, bundle({"script": script}))
    call = send(stack.sessions, session_id, "go")
    events = [await next_event(call)]
    while text_of(events) != "I was about to say":
        events.append(await next_event(call))
    cancelled = await stack.sessions.CancelTurn(
        session_service_pb2.CancelTurnRequest(session_id=session_id)
    )
    rest = await collect(call)  # its timeout only fails a hung turn
    assert cancelled.turn_id == events[0].turn_id
    assert kinds(rest)[-1] == "turn_cancelled"
    partial = rest[-1].turn_cancelled.partial_message
    assert partial.content == "I was about to say"
    assert (await transcript(stack, session_id))[-1].content == "I was about to say"
    # The session takes the next message; cancelling the ended turn again is harmless.
    assert (await get_session(stack, session_id)).active_turn_id == ""
    again = await stack.sessions.CancelTurn(
        session_service_pb2.CancelTurnRequest(session_id=session_id, turn_id=cancelled.turn_id)
    )
    assert again.turn_id == cancelled.turn_id
    nothing = await rpc_error(
        stack.sessions.CancelTurn(session_service_pb2.CancelTurnRequest(session_id=session_id))
    )
    assert error_info(nothing).reason == "NO_ACTIVE_TURN"


async def test_a_session_with_a_running_turn_cannot_be_closed_or_deleted(stack: Stack) -> None:
    session_id = await active_session(stack, bundle({"script": [{"stall": True}]}))
    call = send(stack.sessions, session_id, "go")
    await next_event(call)
    for attempt in (
        stack.sessions.CompleteSession(
            session_service_pb2.CompleteSessionRequest(session_id=session_id)
        ),
        stack.sessions.DeleteSession(
            session_service_pb2.DeleteSessionRequest(session_id=session_id)
        ),
    ):
        error = await rpc_error(attempt)
        assert error_info(error).reason == "TURN_IN_PROGRESS"
    await stack.sessions.CancelTurn(session_service_pb2.CancelTurnRequest(session_id=session_id))
    assert kinds(await collect(call))[-1] == "turn_cancelled"


async def test_deltas_are_written_in_batches(stack: Stack) -> None:
    long_reply = " ".join(f"word{n}" for n in range(400))
    session_id = await active_session(stack, bundle({"reply": long_reply}))
    before = stack.session_app.runner.flushes
    events = await collect(send(stack.sessions, session_id, "talk"))
    flushes = stack.session_app.runner.flushes - before
    assert text_of(events) == long_reply
    assert len(events) > 400
    assert flushes < len(events) / 4


@pytest.mark.timeout(120)
async def test_fifty_sessions_run_turns_at_once_with_gap_free_logs(stack: Stack) -> None:
    reply = " ".join(f"token{n}" for n in range(40))
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="many",
            config=config_pb2.Config(name="many", yaml_content=bundle({"reply": reply})),
        )
    )
    sessions = await asyncio.gather(
        *(
            stack.sessions.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="many", start=True)
            )
            for _ in range(50)
        )
    )

    async def one_turn(session_id: str) -> list[Event]:
        return await collect(send(stack.sessions, session_id, "go"), within=90)

    results = await asyncio.gather(*(one_turn(s.session_id) for s in sessions))
    for session, events in zip(sessions, results, strict=True):
        assert_gap_free(events)
        assert events[0].sequence == 1
        assert kinds(events)[-1] == "turn_completed"
        assert text_of(events) == reply
        stored = await collect(
            stack.sessions.StreamEvents(
                session_service_pb2.StreamEventsRequest(session_id=session.session_id)
            )
        )
        assert [e.sequence for e in stored] == [e.sequence for e in events]


async def test_hooks_are_called_around_the_turn_and_each_tool_call(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = [
        {"reply": "", "tool_calls": [{"name": "list_directory", "arguments": {"path": "."}}]},
        {"reply": "done"},
    ]
    document = bundle(
        {"script": script},
        tools=[{"module": "tool-filesystem", "config": {"allowed_paths": [str(tmp_path)]}}],
    ).replace(
        '"providers"',
        '"hooks": [{"module": "hooks-logging", "config": {"log_level": "INFO"}}],\n"providers"',
    )
    session_id = await active_session(stack, document)
    with caplog.at_level("INFO", logger="tandem.hooks"):
        events = await collect(send(stack.sessions, session_id, "go"))
    turn_id = events[0].turn_id
    lines = [r.getMessage() for r in caplog.records if r.name == "tandem.hooks"]
    order = [line.split()[0] for line in lines if turn_id in line]
    # Two model calls: one asks for the tool, one replies.
    assert order == [
        "event=turn_start",
        "event=provider_request",
        "event=tool_approval",
        "event=tool_call_start",
        "event=tool_call_end",
        "event=provider_request",
        "event=turn_ending",
        "event=turn_end",
    ]


async def test_a_stopping_replica_ends_streams_resumably_and_fails_its_unfinished_turn(
    stack: Stack, database_url: str
) -> None:
    session_id = await active_session(stack, bundle({"script": [{"reply": "wait", "stall": True}]}))
    call = send(stack.sessions, session_id, "go")
    seen = [await next_event(call)]
    stopping = asyncio.create_task(stack.session_app.stop(grace=0.5))
    error = await rpc_error(collect(call))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "SERVER_DRAINING"
    last = int(error_info(error).metadata["last_sequence"])
    assert last >= seen[-1].sequence
    await asyncio.wait_for(stopping, 10)
    # Another replica on the same database serves the rest of the log.
    async with (
        running_session_service(database_url, stack.config_app.server.address) as other,
        grpc.aio.insecure_channel(other.server.address) as channel,
    ):
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        rest = await collect(
            stub.StreamEvents(
                session_service_pb2.StreamEventsRequest(session_id=session_id, after_sequence=last)
            )
        )
        assert rest[0].sequence == last + 1
        assert kinds(rest)[-1] == "turn_failed"
        assert rest[-1].turn_failed.code == "REPLICA_STOPPED"
        # The session takes a new turn straight away.
        again = send(stub, session_id, "again")
        assert (await next_event(again)).HasField("turn_started")
        await stub.CancelTurn(session_service_pb2.CancelTurnRequest(session_id=session_id))
        await collect(again)
