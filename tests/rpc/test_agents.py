"""Agents as child sessions (tool-delegate, tool-task), through real stubs on both databases.

A package is imported with a root bundle whose echo provider plays the parent's script, and
agent files whose own echo configs play the children's; the parent's log, the children's
sessions and logs, and the final replies are checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shared._generated.tandem.config.v1 import config_service_pb2
from shared._generated.tandem.session.v1 import events_pb2, session_pb2, session_service_pb2
from tests.support.llm_servers import (
    LlmServer,
    llm_server,
    openai_text_reply,
    openai_tool_call_reply,
    stream,
)
from tests.support.pair import Stack, running_pair
from tests.support.turns import Event, collect, kinds, next_event, send

NAMESPACE = "team"


def agent_file(name: str, script: Sequence[dict[str, Any]], description: str = "") -> bytes:
    document = {
        "meta": {"name": name, "description": description or f"The {name}."},
        # Priority 0: the agent's own provider is the one its turns use.
        "providers": [
            {"module": "provider-echo", "config": {"script": list(script), "priority": 0}}
        ],
    }
    return f"---\n{json.dumps(document)}\n---\nYou are the {name}.\n".encode()


AGENTS = {
    "agents/researcher.md": agent_file("researcher", [{"reply": "researched: three facts"}]),
    "agents/writer.md": agent_file("writer", [{"reply": "written: a draft"}]),
    "agents/stuck.md": agent_file("stuck", [{"reply": "thinking hard", "stall": True}]),
    "agents/broken.md": agent_file(
        "broken", [{"fail": {"code": "UNAVAILABLE", "message": "the model is down"}}]
    ),
}


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def delegate(agent: str, instruction: str, **more: Any) -> dict[str, Any]:
    return {"name": "delegate", "arguments": {"agent": agent, "instruction": instruction, **more}}


def root(
    script: Sequence[dict[str, Any]],
    delegate_config: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
) -> bytes:
    document = {
        "bundle": {"name": NAMESPACE},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [provider or {"module": "provider-echo", "config": {"script": list(script)}}],
        "tools": [
            {"module": "tool-delegate", **({"config": delegate_config} if delegate_config else {})},
            {"module": "tool-task"},
        ],
        "agents": {"include": [f"{NAMESPACE}:{path[7:-3]}" for path in AGENTS]},
    }
    return f"---\n{json.dumps(document)}\n---\nYou lead a team.\n".encode()


async def import_team(stack: Stack, files: dict[str, bytes]) -> str:
    """Imports the team package made of files; its root config's id."""
    imported = await stack.configs.ImportBundle(
        config_service_pb2.ImportBundleRequest(
            files=[
                config_service_pb2.BundleFile(path=path, content=content)
                for path, content in sorted(files.items())
            ],
            source_uri="git+https://example.invalid/team@main",
        )
    )
    return next(c.config_id for c in imported.configs if c.name == NAMESPACE)


def with_agent(
    bundle: bytes, name: str, document: dict[str, Any], instruction: str
) -> dict[str, bytes]:
    """The team package with one more agent file, which the root bundle includes."""
    text = bundle.decode().replace('"include": [', f'"include": ["{NAMESPACE}:{name}", ')
    agent = f"---\n{json.dumps(document)}\n---\n{instruction}\n".encode()
    return {"bundle.md": text.encode(), **AGENTS, f"agents/{name}.md": agent}


async def team_session(
    stack: Stack,
    script: Sequence[dict[str, Any]],
    delegate_config: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
) -> str:
    files = {"bundle.md": root(script, delegate_config, provider), **AGENTS}
    root_id = await import_team(stack, files)
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=root_id, start=True)
    )
    return str(session.session_id)


async def events_of(stack: Stack, session_id: str) -> list[Event]:
    """A session's whole log, as StreamEvents replays it."""
    call = stack.sessions.StreamEvents(
        session_service_pb2.StreamEventsRequest(session_id=session_id, after_sequence=0)
    )
    return await collect(call)


def of_kind(events: Sequence[Event], kind: str) -> list[Any]:
    return [getattr(e, kind) for e in events if e.WhichOneof("event") == kind]


def results(events: Sequence[Event]) -> list[events_pb2.ToolCallCompleted]:
    return of_kind(events, "tool_call_completed")


async def children(stack: Stack, parent: str) -> list[session_pb2.Session]:
    listed = await stack.sessions.ListSessions(
        session_service_pb2.ListSessionsRequest(filter=f'parent_session_id = "{parent}"')
    )
    return list(listed.sessions)


async def test_two_agents_in_sequence(stack: Stack) -> None:
    session_id = await team_session(
        stack,
        [
            {"tool_calls": [delegate("researcher", "Find facts about otters")]},
            {"tool_calls": [delegate("writer", "Write it up", context_depth="none")]},
            {"reply": "Here is the write-up."},
        ],
    )
    events = await collect(send(stack.sessions, session_id, "Tell me about otters"))
    assert events[-1].turn_completed.message.content == "Here is the write-up."

    started = of_kind(events, "agent_started")
    completed = of_kind(events, "agent_completed")
    assert [s.agent for s in started] == ["researcher", "writer"]
    assert [(c.agent, c.outcome) for c in completed] == [
        ("researcher", "COMPLETED"),
        ("writer", "COMPLETED"),
    ]
    replies = [json.loads(r.result) for r in results(events)]
    assert [r["response"] for r in replies] == ["researched: three facts", "written: a draft"]
    # Each result names its child, which AgentStarted announced for the same call.
    assert [r["session_id"] for r in replies] == [s.session_id for s in started]
    assert [s.tool_call_id for s in started] == [r.tool_call_id for r in results(events)]

    kids = await children(stack, session_id)
    assert sorted((k.agent, k.parent_session_id) for k in kids) == [
        ("researcher", session_id),
        ("writer", session_id),
    ]
    parent = await stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session_id)
    )
    assert all(k.config_revision == parent.config_revision for k in kids)

    # Each child has a log of its own: the instruction (with the parent's conversation when
    # asked for), then the agent's reply.
    researcher = await events_of(stack, started[0].session_id)
    assert kinds(researcher)[0] == "turn_started"
    asked = researcher[0].turn_started.user_message.content
    assert asked.endswith("Find facts about otters")
    assert "[user]: Tell me about otters" in asked
    assert researcher[-1].turn_completed.message.content == "researched: three facts"
    writer = await events_of(stack, started[1].session_id)
    assert writer[0].turn_started.user_message.content == "Write it up"


async def test_two_agents_in_parallel(stack: Stack) -> None:
    session_id = await team_session(
        stack,
        [
            {
                "tool_calls": [
                    delegate("researcher", "Find facts", context_depth="none"),
                    {"name": "task", "arguments": {"agent": "writer", "instruction": "Draft"}},
                ]
            },
            {"reply": "Both are back."},
        ],
    )
    events = await collect(send(stack.sessions, session_id, "Go"))
    assert events[-1].turn_completed.message.content == "Both are back."
    started = of_kind(events, "agent_started")
    assert sorted(s.agent for s in started) == ["researcher", "writer"]
    # Both children were started before either result was logged: they ran side by side.
    first_result = next(i for i, e in enumerate(events) if e.HasField("tool_call_completed"))
    assert all(i < first_result for i, e in enumerate(events) if e.HasField("agent_started"))
    by_call = {r.tool_call_id: json.loads(r.result)["response"] for r in results(events)}
    assert sorted(by_call.values()) == ["researched: three facts", "written: a draft"]
    assert len(await children(stack, session_id)) == 2


async def test_a_failing_agent_is_a_tool_error_and_the_parent_goes_on(stack: Stack) -> None:
    session_id = await team_session(
        stack,
        [
            {"tool_calls": [delegate("broken", "Try", context_depth="none")]},
            {"tool_calls": [delegate("nobody", "Try", context_depth="none")]},
            {"reply": "I will do it myself."},
        ],
    )
    events = await collect(send(stack.sessions, session_id, "Go"))
    assert events[-1].turn_completed.message.content == "I will do it myself."
    failed, unknown = results(events)
    assert failed.is_error
    assert "the model is down" in json.loads(failed.result)["error"]
    [completed] = of_kind(events, "agent_completed")
    assert (completed.agent, completed.outcome) == ("broken", "FAILED")
    # An agent the bundle does not offer starts nothing.
    assert unknown.is_error
    assert "no agent named 'nobody'" in unknown.result
    assert "researcher" in unknown.result
    assert len(of_kind(events, "agent_started")) == 1


async def test_cancelling_the_parent_cancels_the_child(stack: Stack) -> None:
    session_id = await team_session(
        stack, [{"tool_calls": [delegate("stuck", "Ponder", context_depth="none")]}]
    )
    call = send(stack.sessions, session_id, "Go")
    seen = [await next_event(call)]
    while not seen[-1].HasField("agent_started"):
        seen.append(await next_event(call))
    child = seen[-1].agent_started
    # The child is working: its reply has started to stream.
    child_call = stack.sessions.StreamEvents(
        session_service_pb2.StreamEventsRequest(session_id=child.session_id, follow=True)
    )
    while not (await next_event(child_call)).HasField("content_delta"):
        pass
    child_call.cancel()

    await stack.sessions.CancelTurn(
        session_service_pb2.CancelTurnRequest(session_id=session_id, turn_id=seen[0].turn_id)
    )
    rest = await collect(call)
    assert rest[-1].HasField("turn_cancelled")
    [completed] = of_kind(rest, "agent_completed")
    assert completed.outcome == "CANCELLED"

    child_log = await events_of(stack, child.session_id)
    assert child_log[-1].HasField("turn_cancelled")
    assert child_log[-1].turn_cancelled.partial_message.content.startswith("thinking")
    for sid in (session_id, child.session_id):
        session = await stack.sessions.GetSession(
            session_service_pb2.GetSessionRequest(session_id=sid)
        )
        assert session.active_turn_id == ""


async def test_resume_continues_an_earlier_child_and_only_one(
    stack: Stack, server: LlmServer
) -> None:
    # The parent's model is scripted turn by turn, so the second turn can name the child
    # the first one made; the agents answer from their own (echo) providers.
    model = {
        "module": "provider-openai",
        "config": {
            "model": "gpt-test",
            "base_url": f"{server.origin}/v1",
            "api_key": "${TANDEM_TEST_SECRET}",
            "max_retries": 0,
        },
    }
    session_id = await team_session(stack, [], provider=model)
    server.script(
        openai_tool_call_reply("c1", "delegate", {"agent": "researcher", "instruction": "Dig"}),
        stream(openai_text_reply(["first"])),
    )
    first = await collect(send(stack.sessions, session_id, "Go"))
    [started] = of_kind(first, "agent_started")
    child_id = started.session_id

    server.script(
        openai_tool_call_reply("c2", "delegate", {"session_id": child_id, "instruction": "More"}),
        openai_tool_call_reply(
            "c3", "delegate", {"session_id": session_id, "instruction": "Hijack"}
        ),
        stream(openai_text_reply(["second"])),
    )
    second = await collect(send(stack.sessions, session_id, "Again"))
    assert second[-1].turn_completed.message.content == "second"
    [resumed] = of_kind(second, "agent_started")
    assert (resumed.session_id, resumed.agent, resumed.resumed) == (child_id, "researcher", True)
    continued, refused = results(second)
    assert json.loads(continued.result) == {
        "response": "researched: three facts",
        "session_id": child_id,
    }
    # Only a child this session started can be continued; the parent itself is not one.
    assert refused.is_error
    assert "was started by this session" in refused.result
    child_log = await events_of(stack, child_id)
    asked = [e.turn_started.user_message.content for e in child_log if e.HasField("turn_started")]
    # The new child got the parent's conversation first (context_depth defaults to recent);
    # a continued one already has its own.
    assert asked == ["<parent_context>\n[user]: Go\n</parent_context>\n\nDig", "More"]
    assert [k.session_id for k in await children(stack, session_id)] == [child_id]


@pytest.fixture
async def shallow(database_url: str) -> AsyncIterator[Stack]:
    async with running_pair(database_url, session={"agents_max_depth": 1}) as stack:
        yield stack


async def test_delegation_depth_is_capped(shallow: Stack) -> None:
    # Children may delegate (nothing is excluded), but the server allows one level only.
    session_id = await team_session(
        shallow,
        [
            {"tool_calls": [delegate("self", "Split the work", context_depth="none")]},
            {"reply": "top"},
        ],
        {"settings": {"exclude_tools": []}},
    )
    events = await collect(send(shallow.sessions, session_id, "Go"))
    assert events[-1].turn_completed.message.content == "top"
    [started] = of_kind(events, "agent_started")
    assert started.agent == "self"
    child_log = await events_of(shallow, started.session_id)
    [refused] = results(child_log)
    assert refused.is_error
    assert "nested at most 1 deep" in refused.result
    assert of_kind(child_log, "agent_started") == []


async def test_an_agents_own_module_problem_is_reported_under_it_once(stack: Stack) -> None:
    broken = {
        "meta": {"name": "mcp-user", "description": "Needs a module we lack."},
        "tools": [{"module": "tool-mcp"}],
    }
    files = with_agent(root([{"reply": "unused"}]), "mcp-user", broken, "You use MCP.")
    root_id = await import_team(stack, files)
    prepared = await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id=root_id)
    )
    assert not prepared.valid
    [violation] = prepared.violations
    assert violation.field == "agents.mcp-user (team:agents/mcp-user): tools[2]"
    assert "tool-mcp" in violation.message


async def test_an_agent_that_waits_for_approval_leaves_its_session_to_continue(
    stack: Stack,
) -> None:
    writer = {
        "meta": {"name": "scribe", "description": "Writes files."},
        "providers": [
            {
                "module": "provider-echo",
                "config": {
                    "priority": 0,
                    "script": [
                        {
                            "tool_calls": [
                                {
                                    "name": "write_file",
                                    "arguments": {"path": "out.txt", "content": "x"},
                                }
                            ]
                        },
                        {"reply": "wrote it"},
                    ],
                },
            }
        ],
        "tools": [{"module": "tool-filesystem"}],
        "hooks": [{"module": "hooks-approval", "config": {"tools": ["write_file"]}}],
    }
    script: list[dict[str, Any]] = [
        {"tool_calls": [delegate("scribe", "Write out.txt", context_depth="none")]},
        {"reply": "ok"},
    ]
    files = with_agent(root(script), "scribe", writer, "You write.")
    root_id = await import_team(stack, files)
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=root_id, start=True)
    )
    events = await collect(send(stack.sessions, created.session_id, "Go"))
    # The parent is not held up: it learns the agent waits, and finishes its turn.
    assert events[-1].turn_completed.message.content == "ok"
    [result] = results(events)
    assert result.is_error
    assert "waits for approval" in result.result
    [completed] = of_kind(events, "agent_completed")
    assert completed.outcome == "WAITING"
    child = completed.session_id
    child_log = await events_of_until(stack, child, "approval_requested")
    call = child_log[-1].approval_requested.tool_call_id
    decided = await stack.sessions.DecideApproval(
        session_service_pb2.DecideApprovalRequest(
            session_id=child,
            tool_call_id=call,
            decision=session_service_pb2.DecideApprovalRequest.DECISION_APPROVE,
        )
    )
    assert decided.resumed
    follower = stack.sessions.StreamEvents(
        session_service_pb2.StreamEventsRequest(
            session_id=child, after_sequence=child_log[-1].sequence
        )
    )
    rest = await collect(follower)
    assert rest[-1].turn_completed.message.content == "wrote it"


async def events_of_until(stack: Stack, session_id: str, kind: str) -> list[Event]:
    """A session's log up to and including its first event of kind."""
    call = stack.sessions.StreamEvents(
        session_service_pb2.StreamEventsRequest(session_id=session_id, follow=True)
    )
    seen = [await next_event(call)]
    while seen[-1].WhichOneof("event") != kind:
        seen.append(await next_event(call))
    call.cancel()
    return seen


async def test_concurrent_agents_are_capped_per_turn(database_url: str) -> None:
    async with running_pair(database_url, session={"agents_max_concurrent": 1}) as one_at_a_time:
        session_id = await team_session(
            one_at_a_time,
            [
                {
                    "tool_calls": [
                        delegate("researcher", "Find facts", context_depth="none"),
                        delegate("writer", "Draft", context_depth="none"),
                    ]
                },
                {"reply": "Both are back."},
            ],
        )
        events = await collect(send(one_at_a_time.sessions, session_id, "Go"))
    assert events[-1].turn_completed.message.content == "Both are back."
    # With one slot, the second agent starts only once the first has completed.
    agent_events = [
        (e.WhichOneof("event"), getattr(e, str(e.WhichOneof("event"))).agent)
        for e in events
        if e.WhichOneof("event") in ("agent_started", "agent_completed")
    ]
    first, second = agent_events[0][1], agent_events[2][1]
    assert agent_events == [
        ("agent_started", first),
        ("agent_completed", first),
        ("agent_started", second),
        ("agent_completed", second),
    ]
    assert {first, second} == {"researcher", "writer"}


async def test_agents_work_in_the_files_of_the_session_that_started_them(stack: Stack) -> None:
    builder = {
        "meta": {"name": "builder", "description": "Builds files."},
        "providers": [
            {
                "module": "provider-echo",
                "config": {
                    "priority": 0,
                    "script": [
                        {
                            "tool_calls": [
                                {
                                    "name": "write_file",
                                    "arguments": {"path": "built.txt", "content": "by the agent"},
                                }
                            ]
                        },
                        {"reply": "built"},
                    ],
                },
            }
        ],
        "tools": [{"module": "tool-filesystem"}],
    }
    script: list[dict[str, Any]] = [
        {"tool_calls": [delegate("builder", "Build", context_depth="none")]},
        {"reply": "ok"},
    ]
    files = with_agent(root(script), "builder", builder, "You build.")
    root_id = await import_team(stack, files)
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=root_id, start=True)
    )
    events = await collect(send(stack.sessions, created.session_id, "Go"))
    assert events[-1].turn_completed.message.content == "ok"
    [completed] = of_kind(events, "agent_completed")
    assert completed.outcome == "COMPLETED"
    workspaces = Path(os.environ["TANDEM_WORKSPACE_ROOT"]) / "default"
    assert (workspaces / created.session_id / "built.txt").read_text() == "by the agent"
    assert not (workspaces / completed.session_id / "built.txt").exists()
