"""tool-todo and hooks-todo-reminder through real turns, on both databases.

The model is provider-openai's SDK talking to a local server, so each test can read exactly
what the model was sent: the reminder rides on the next model call only, and is never stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.llm_servers import (
    LlmServer,
    llm_server,
    openai_provider,
    openai_text_reply,
    openai_tool_call_reply,
    stream,
)
from tests.support.pair import Stack
from tests.support.turns import collect, send, transcript

PLAN = [
    {"content": "Read the spec", "activeForm": "Reading the spec", "status": "completed"},
    {"content": "Write the code", "activeForm": "Writing the code", "status": "in_progress"},
    {"content": "Run the tests", "activeForm": "Running the tests", "status": "pending"},
]


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


async def todo_session(stack: Stack, server: LlmServer, *, reminder: bool = True) -> str:
    body: dict[str, Any] = {
        "bundle": {"name": "planner"},
        "session": {"orchestrator": "loop-streaming"},
        "providers": [openai_provider(server)],
        "tools": [{"module": "tool-todo"}],
    }
    if reminder:
        body["hooks"] = [{"module": "hooks-todo-reminder"}, {"module": "hooks-todo-display"}]
    document = f"---\n{json.dumps(body)}\n---\nYou plan your work.\n"
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="planner", config=config_pb2.Config(name="planner", yaml_content=document)
        )
    )
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="planner", start=True)
    )
    return str(created.session_id)


def tool_results(events: Any) -> list[tuple[str, bool]]:
    return [
        (e.tool_call_completed.result, e.tool_call_completed.is_error)
        for e in events
        if e.HasField("tool_call_completed")
    ]


async def test_the_list_is_kept_and_the_reminder_rides_on_the_next_call_only(
    stack: Stack, server: LlmServer
) -> None:
    server.script(
        openai_tool_call_reply("call_plan", "todo", {"action": "create", "todos": PLAN}),
        stream(openai_text_reply(["Planned."])),
    )
    session_id = await todo_session(stack, server)
    events = await collect(send(stack.sessions, session_id, "Build it"))
    [(result, is_error)] = tool_results(events)
    assert not is_error
    assert json.loads(result) == {"status": "created", "count": 3, "todos": PLAN}

    first, second = (request.body["messages"] for request in server.requests)
    # Before any todo call, the reminder nudges the model towards the tool, as its own message.
    assert first[-1]["role"] == "user"
    assert "todo tool hasn't been used recently" in first[-1]["content"]
    # After the call, the list rides on the tool result: completed, in progress, pending.
    tool_message = second[-1]
    assert tool_message["role"] == "tool"
    assert tool_message["content"].startswith(result)
    assert "✓ Read the spec\n→ Writing the code\n☐ Run the tests" in tool_message["content"]
    assert "hasn't been used recently" not in tool_message["content"]

    # What is stored is what the tool returned, never the reminder.
    stored = await transcript(stack, session_id)
    assert [m.content for m in stored if m.tool_call_id == "call_plan"] == [result]
    assert all("system-reminder" not in m.content for m in stored)

    # A later turn, a new engine, the same list: it lives with the session, not the turn.
    server.script(
        openai_tool_call_reply("call_list", "todo", {"action": "list"}),
        stream(openai_text_reply(["Still on it."])),
    )
    events = await collect(send(stack.sessions, session_id, "Where are we?"))
    [(listed, _)] = tool_results(events)
    assert json.loads(listed) == {"status": "listed", "count": 3, "todos": PLAN}
    third = server.requests[2].body["messages"]
    # The new turn starts with the list in view.
    assert "→ Writing the code" in third[-1]["content"]


async def test_bad_todos_are_a_tool_error_and_keep_the_old_list(
    stack: Stack, server: LlmServer
) -> None:
    server.script(
        openai_tool_call_reply("call_plan", "todo", {"action": "create", "todos": PLAN}),
        openai_tool_call_reply(
            "call_bad", "todo", {"action": "update", "todos": [{"content": "x"}]}
        ),
        openai_tool_call_reply(
            "call_wrong", "todo", {"action": "update", "todos": [{**PLAN[0], "status": "x"}]}
        ),
        openai_tool_call_reply("call_list", "todo", {"action": "list"}),
        stream(openai_text_reply(["Done."])),
    )
    session_id = await todo_session(stack, server, reminder=False)
    events = await collect(send(stack.sessions, session_id, "Plan"))
    results = tool_results(events)
    assert results[1] == (
        "Todo 0 missing required fields (content, status, activeForm)",
        True,
    )
    assert results[2] == ("Todo 0 has invalid status: x", True)
    assert json.loads(results[3][0])["todos"] == PLAN
    # Without the reminder hook nothing is added to what the model sees.
    assert all("system-reminder" not in json.dumps(request.body) for request in server.requests)


async def test_the_list_goes_with_the_session(stack: Stack, server: LlmServer) -> None:
    server.script(
        openai_tool_call_reply("call_plan", "todo", {"action": "create", "todos": PLAN}),
        stream(openai_text_reply(["Planned."])),
    )
    session_id = await todo_session(stack, server, reminder=False)
    await collect(send(stack.sessions, session_id, "Plan"))
    state = Path(os.environ["TANDEM_WORKSPACE_ROOT"]) / "default" / ".state" / session_id
    assert json.loads((state / "todo.json").read_text(encoding="utf-8")) == PLAN

    await stack.sessions.DeleteSession(
        session_service_pb2.DeleteSessionRequest(session_id=session_id)
    )
    assert not state.exists()


async def test_prepare_warns_that_display_hooks_do_nothing(stack: Stack, server: LlmServer) -> None:
    await todo_session(stack, server)
    prepared = await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id="planner")
    )
    assert prepared.valid
    notices = [w for w in prepared.warnings if "a server has none" in w.message]
    assert [w.field for w in notices] == ["hooks[1]"]
    assert notices[0].message.startswith("hooks-todo-display: only draws in a terminal")
