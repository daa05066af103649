"""Turns on provider-openai and provider-anthropic, through local servers speaking their APIs.

The real SDKs run end to end: SessionService streams from a local HTTP server that answers in
the provider's own streaming wire format, runs the tool call it asks for, and sends the
result back in the next request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import struct_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tests.support.llm_servers import (
    LlmServer,
    SseEvent,
    anthropic_error_body,
    anthropic_event,
    anthropic_message_end,
    anthropic_message_start,
    anthropic_text_block,
    anthropic_tool_use_block,
    llm_server,
    openai_chunk,
    openai_done,
    openai_error_body,
    openai_text_reply,
    openai_tool_call_arguments,
    openai_tool_call_start,
    openai_usage,
    stream,
)
from tests.support.pair import Stack
from tests.support.rpc import seed_workspace
from tests.support.turns import assert_gap_free, collect, kinds, send, text_of, transcript

SECRET = "s3cr3t-value-never-shown"  # what the stack fixture puts in TANDEM_TEST_SECRET


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def document(provider: str, config: dict[str, Any]) -> str:
    body = {
        "bundle": {"name": "http"},
        "session": {"orchestrator": "loop-streaming"},
        "providers": [
            {"module": provider, "config": {**config, "api_key": "${TANDEM_TEST_SECRET}"}}
        ],
        # No paths: the tool reaches the session's workspace, where the note is.
        "tools": [{"module": "tool-filesystem"}],
    }
    return f"---\n{json.dumps(body)}\n---\nYou answer from files.\n"


async def session_on(stack: Stack, yaml_content: str) -> str:
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="http", config=config_pb2.Config(name="http", yaml_content=yaml_content)
        )
    )
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="http", start=True)
    )
    seed_workspace(created.session_id, {"note.txt": "remember the milk"})
    return str(created.session_id)


async def test_an_openai_turn_with_a_tool_call(
    stack: Stack,
    server: LlmServer,
) -> None:
    server.script(
        stream(
            [
                openai_chunk({"role": "assistant", "content": None}),
                openai_tool_call_start(0, "call_note", "read_file"),
                openai_tool_call_arguments(0, '{"pa'),
                openai_tool_call_arguments(0, 'th": "note.txt"}'),
                openai_chunk({}, finish_reason="tool_calls"),
                openai_usage(40, 12),
                openai_done(),
            ]
        ),
        stream(openai_text_reply(["It says ", "remember ", "the milk."], completion_tokens=6)),
    )
    config = {"model": "gpt-test", "base_url": f"{server.origin}/v1", "max_retries": 0}
    session_id = await session_on(stack, document("provider-openai", config))
    events = await collect(send(stack.sessions, session_id, "What does my note say?"))
    assert_gap_free(events)
    [started] = [e.tool_call_started for e in events if e.HasField("tool_call_started")]
    [completed] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert (started.tool_call_id, started.name) == ("call_note", "read_file")
    assert json.loads(started.arguments_json) == {"path": "note.txt"}
    assert completed.result == "remember the milk"
    usage = [e.usage for e in events if e.HasField("usage")]
    assert [(u.input_tokens, u.output_tokens, u.provider) for u in usage] == [
        (40, 12, "provider-openai"),
        (11, 6, "provider-openai"),
    ]
    assert text_of(events) == "It says remember the milk."
    assert events[-1].turn_completed.stop_reason == "stop"
    # The second request carried the tool call and its result back to the model.
    second = server.requests[1].body
    assert second["messages"][0] == {"role": "system", "content": "You answer from files."}
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert second["messages"][3]["tool_call_id"] == "call_note"
    assert second["messages"][3]["content"] == "remember the milk"
    assert {t["function"]["name"] for t in second["tools"]} >= {"read_file", "write_file"}
    # The key was expanded for the SDK and sent, yet nothing the client sees carries it.
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert all(SECRET not in str(e) for e in events)


async def test_an_openai_error_mid_stream_fails_the_turn(
    stack: Stack,
    server: LlmServer,
) -> None:
    server.script(
        stream(
            [
                openai_chunk({"role": "assistant", "content": ""}),
                openai_chunk({"content": "Half an ans"}),
                SseEvent(json.dumps(openai_error_body("backend exploded", "server_error"))),
            ]
        )
    )
    config = {"model": "gpt-test", "base_url": f"{server.origin}/v1", "max_retries": 0}
    session_id = await session_on(stack, document("provider-openai", config))
    events = await collect(send(stack.sessions, session_id, "hi"))
    assert kinds(events)[-1] == "turn_failed"
    assert events[-1].turn_failed.code == "PROVIDER_ERROR"
    assert SECRET not in events[-1].turn_failed.message
    messages = await transcript(stack, session_id)
    assert (messages[-1].role, messages[-1].content) == (
        session_pb2.ROLE_ASSISTANT,
        "Half an ans",
    )


async def test_an_anthropic_turn_with_a_tool_call(
    stack: Stack,
    server: LlmServer,
) -> None:
    server.script(
        stream(
            [
                anthropic_message_start(30),
                *anthropic_text_block(0, ["Let me ", "check."]),
                *anthropic_tool_use_block(
                    1, "toolu_note", "read_file", ['{"path"', ': "note.txt"}']
                ),
                *anthropic_message_end("tool_use", 20),
            ]
        ),
        stream(
            [
                anthropic_message_start(60),
                *anthropic_text_block(0, ["It says ", "remember the milk."]),
                *anthropic_message_end("end_turn", 8),
            ]
        ),
    )
    config = {"model": "claude-test", "base_url": server.origin, "max_retries": 0}
    session_id = await session_on(stack, document("provider-anthropic", config))
    events = await collect(send(stack.sessions, session_id, "What does my note say?"))
    assert_gap_free(events)
    [started] = [e.tool_call_started for e in events if e.HasField("tool_call_started")]
    [completed] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert (started.tool_call_id, started.name) == ("toolu_note", "read_file")
    assert completed.result == "remember the milk"
    usage = [(e.usage.input_tokens, e.usage.output_tokens) for e in events if e.HasField("usage")]
    assert usage == [(30, 20), (60, 8)]
    assert text_of(events) == "Let me check.It says remember the milk."
    assert events[-1].turn_completed.stop_reason == "end_turn"
    second = server.requests[1].body
    assert second["system"] == "You answer from files."
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    [result] = second["messages"][2]["content"]
    assert (result["type"], result["tool_use_id"]) == ("tool_result", "toolu_note")
    roles = [m.role for m in await transcript(stack, session_id)]
    assert roles == [
        session_pb2.ROLE_USER,
        session_pb2.ROLE_ASSISTANT,
        session_pb2.ROLE_TOOL,
        session_pb2.ROLE_ASSISTANT,
    ]


async def test_an_anthropic_error_mid_stream_fails_the_turn(
    stack: Stack,
    server: LlmServer,
) -> None:
    server.script(
        stream(
            [
                anthropic_message_start(10),
                anthropic_event(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    }
                ),
                anthropic_event(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "Partial"},
                    }
                ),
                anthropic_event(anthropic_error_body("Overloaded", "overloaded_error")),
            ]
        )
    )
    config = {"model": "claude-test", "base_url": server.origin, "max_retries": 0}
    session_id = await session_on(stack, document("provider-anthropic", config))
    events = await collect(send(stack.sessions, session_id, "hi"))
    assert kinds(events)[-1] == "turn_failed"
    assert events[-1].turn_failed.code.startswith("PROVIDER_")
    assert text_of(events) == "Partial"


async def test_turn_context_reaches_the_model_but_is_never_stored(
    stack: Stack,
    server: LlmServer,
) -> None:
    server.script(stream(openai_text_reply(["Hello Ada."])))
    config = {"model": "gpt-test", "base_url": f"{server.origin}/v1", "max_retries": 0}
    session_id = await session_on(stack, document("provider-openai", config))
    context = struct_pb2.Struct()
    context.update({"user_name": "Zelda-Quartz", "plan": "gold"})
    call = stack.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(
            session_id=session_id, content="greet me", context=context
        )
    )
    events = await collect(call)
    system = server.requests[0].body["messages"][0]["content"]
    assert system.startswith("You answer from files.")
    assert "- user_name: Zelda-Quartz" in system
    assert "- plan: gold" in system
    assert all("Zelda-Quartz" not in str(e) for e in events)
    assert all("Zelda-Quartz" not in str(m) for m in await transcript(stack, session_id))
