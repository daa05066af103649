"""Approvals as a durable pause (hooks-approval, DecideApproval), through real stubs.

A tool call that needs approval pauses its turn: nothing runs it until DecideApproval, on
any replica, approves or denies every such call; then the turn goes on where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from tests.support.approvals import (
    APPROVE,
    DENY,
    decide,
    document,
    echo,
    gated_session,
    until,
    write,
)
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.llm_servers import (
    LlmServer,
    llm_server,
    openai_text_reply,
    openai_tool_call_reply,
    stream,
)
from tests.support.pair import Stack, running_pair, running_session_service
from tests.support.processes import deployment
from tests.support.rpc import error_info, rpc_error, seed_workspace
from tests.support.turns import assert_gap_free, collect, kinds, next_event, send


def workspace(session_id: str) -> Path:
    return seed_workspace(session_id, {})


async def test_an_approved_call_runs_after_the_pause(stack: Stack) -> None:
    text = document(echo([{"tool_calls": [write("note.txt", "approved")]}, {"reply": "Done."}]))
    session_id = await gated_session(stack.configs, stack.sessions, text)
    call = send(stack.sessions, session_id, "Write the note")
    head = await until(call, "approval_requested")
    requested = head[-1].approval_requested
    assert requested.name == "write_file"
    assert json.loads(requested.arguments_json) == {"path": "note.txt", "content": "approved"}
    assert not requested.HasField("expire_time")
    # Nothing ran: the file is not there, and the turn holds the session.
    assert not (workspace(session_id) / "note.txt").exists()
    session = await stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session_id)
    )
    assert session.active_turn_id == head[0].turn_id

    decided = await decide(stack.sessions, session_id, requested.tool_call_id, APPROVE, "ok")
    assert (decided.turn_id, decided.resumed, list(decided.pending_tool_call_ids)) == (
        head[0].turn_id,
        True,
        [],
    )
    rest = await collect(call)
    events = [*head, *rest]
    assert_gap_free(events)
    assert kinds(rest)[0] == "approval_decided"
    assert rest[0].approval_decided.approved
    completed = [e.tool_call_completed for e in rest if e.HasField("tool_call_completed")]
    assert [c.is_error for c in completed] == [False]
    assert events[-1].turn_completed.message.content == "Done."
    assert (workspace(session_id) / "note.txt").read_text() == "approved"


async def test_decisions_on_calls_that_do_not_wait_are_refused(stack: Stack) -> None:
    text = document(
        echo(
            [
                {"tool_calls": [write("a.txt", "a"), write("b.txt", "b")]},
                {"reply": "Both decided."},
            ]
        )
    )
    session_id = await gated_session(stack.configs, stack.sessions, text)
    # No turn waits yet.
    error = await rpc_error(decide(stack.sessions, session_id, "nope", APPROVE))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "APPROVAL_NOT_PENDING"

    call = send(stack.sessions, session_id, "Write both")
    head = await until(call, "approval_requested")
    head.append(await next_event(call))
    first, second = (e.approval_requested.tool_call_id for e in head[-2:])
    error = await rpc_error(decide(stack.sessions, session_id, "unknown-call", APPROVE))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "APPROVAL_NOT_PENDING"
    error = await rpc_error(decide(stack.sessions, session_id, first, DENY + 5))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT

    decided = await decide(stack.sessions, session_id, first, APPROVE)
    assert (decided.resumed, list(decided.pending_tool_call_ids)) == (False, [second])
    error = await rpc_error(decide(stack.sessions, session_id, first, DENY))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "APPROVAL_ALREADY_DECIDED"

    decided = await decide(stack.sessions, session_id, second, DENY, "not b")
    assert decided.resumed
    rest = await collect(call)
    results = {
        e.tool_call_completed.tool_call_id: e.tool_call_completed
        for e in rest
        if e.HasField("tool_call_completed")
    }
    assert not results[first].is_error
    assert results[second].is_error
    assert "not b" in results[second].result
    assert (workspace(session_id) / "a.txt").exists()
    assert not (workspace(session_id) / "b.txt").exists()
    assert rest[-1].HasField("turn_completed")


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


async def test_a_denial_reaches_the_model_with_its_reason(stack: Stack, server: LlmServer) -> None:
    provider = {
        "module": "provider-openai",
        "config": {
            "model": "gpt-test",
            "base_url": f"{server.origin}/v1",
            "api_key": "${TANDEM_TEST_SECRET}",
            "max_retries": 0,
        },
    }
    server.script(
        openai_tool_call_reply("call_w", "write_file", {"path": "x.txt", "content": "x"}),
        stream(openai_text_reply(["Understood."])),
    )
    session_id = await gated_session(stack.configs, stack.sessions, document(provider))
    call = send(stack.sessions, session_id, "Write x")
    await until(call, "approval_requested")
    await decide(stack.sessions, session_id, "call_w", DENY, "x.txt is off limits")
    rest = await collect(call)
    assert rest[-1].turn_completed.message.content == "Understood."
    tool_message = server.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == "call_w"
    assert "x.txt is off limits" in tool_message["content"]
    assert not (workspace(session_id) / "x.txt").exists()


async def test_nobody_deciding_in_time_denies(database_url: str) -> None:
    hook = {"module": "hooks-approval", "config": {"tools": ["write_file"], "default_timeout": 0.3}}
    text = document(
        echo([{"tool_calls": [write("late.txt", "late")]}, {"reply": "Gave up."}]), hook
    )
    # The replica that paused the turn wakes at the deadline, long before its idle sweep.
    async with running_pair(database_url, session={"approval_sweep_seconds": 3600}) as stack:
        session_id = await gated_session(stack.configs, stack.sessions, text)
        events = await collect(send(stack.sessions, session_id, "Write late"))
    assert kinds(events).count("approval_requested") == 1
    requested = next(e.approval_requested for e in events if e.HasField("approval_requested"))
    assert requested.HasField("expire_time")
    decided = next(e.approval_decided for e in events if e.HasField("approval_decided"))
    assert not decided.approved
    assert "in time" in decided.reason
    [result] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert result.is_error
    assert "in time" in result.result
    assert events[-1].turn_completed.message.content == "Gave up."
    assert not (workspace(session_id) / "late.txt").exists()


async def test_a_waiting_turn_can_be_cancelled(stack: Stack) -> None:
    text = document(echo([{"tool_calls": [write("c.txt", "c")]}, {"reply": "never"}]))
    session_id = await gated_session(stack.configs, stack.sessions, text)
    call = send(stack.sessions, session_id, "Write c")
    head = await until(call, "approval_requested")
    cancelled = await stack.sessions.CancelTurn(
        session_service_pb2.CancelTurnRequest(session_id=session_id)
    )
    assert cancelled.turn_id == head[0].turn_id
    rest = await collect(call)
    assert kinds(rest) == ["turn_cancelled"]
    error = await rpc_error(
        decide(stack.sessions, session_id, head[-1].approval_requested.tool_call_id, APPROVE)
    )
    assert error_info(error).reason == "APPROVAL_NOT_PENDING"
    # The session takes a new turn at once.
    session = await stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session_id)
    )
    assert session.active_turn_id == ""


async def test_the_pause_outlives_a_restart(stack: Stack, database_url: str) -> None:
    text = document(echo([{"tool_calls": [write("kept.txt", "kept")]}, {"reply": "Resumed."}]))
    session_id = await gated_session(stack.configs, stack.sessions, text)
    call = send(stack.sessions, session_id, "Write kept")
    head = await until(call, "approval_requested")
    tool_call_id = head[-1].approval_requested.tool_call_id
    await stack.session_app.stop(grace=0.5)
    with pytest.raises(grpc.aio.AioRpcError):
        await collect(call)

    # A new replica on the same database: the turn is still waiting, and resumes there.
    async with (
        running_session_service(database_url, stack.config_app.server.address) as restarted,
        grpc.aio.insecure_channel(restarted.server.address) as channel,
    ):
        sessions = session_service_pb2_grpc_stub(channel)
        session = await sessions.GetSession(
            session_service_pb2.GetSessionRequest(session_id=session_id)
        )
        assert session.active_turn_id == head[0].turn_id
        follower = sessions.StreamEvents(
            session_service_pb2.StreamEventsRequest(
                session_id=session_id, after_sequence=head[-1].sequence
            )
        )
        decided = await decide(sessions, session_id, tool_call_id, APPROVE)
        assert decided.resumed
        rest = await collect(follower)
    assert_gap_free([*head, *rest])
    assert rest[-1].turn_completed.message.content == "Resumed."
    assert (workspace(session_id) / "kept.txt").read_text() == "kept"


def session_service_pb2_grpc_stub(channel: grpc.aio.Channel) -> Any:
    return session_service_pb2_grpc.SessionServiceStub(channel)


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_approval_through_the_other_replica(tmp_path: Path) -> None:
    require_postgres()
    root = tmp_path / "workspaces"
    with fresh_postgres_database() as url:
        async with deployment(url, session_env={"TANDEM_WORKSPACE_ROOT": str(root)}) as tandem:
            paused_here, decided_there = tandem.sessions
            text = document(
                echo([{"tool_calls": [write("shared.txt", "both")]}, {"reply": "Finished."}])
            )
            session_id = await gated_session(tandem.configs, paused_here, text)
            call = send(paused_here, session_id, "Write shared")
            head = await until(call, "approval_requested")
            tool_call_id = head[-1].approval_requested.tool_call_id
            decided = await decide(decided_there, session_id, tool_call_id, APPROVE)
            assert decided.resumed
            # The replica that paused the turn streams what the other one ran.
            rest = await collect(call)
            assert_gap_free([*head, *rest])
            assert rest[-1].turn_completed.message.content == "Finished."
    assert (root / "default" / session_id / "shared.txt").read_text() == "both"
