"""What a child session gets from its parent's bundle, and what parent context it is given."""

from __future__ import annotations

import dataclasses

import pytest

from session_service.modules.delegate import render_context
from session_service.prepare.model import PreparedAgent, PreparedBundle, ResolvedModule
from session_service.prepare.spawn import SELF_AGENT, for_agent, spawn_exclusions
from session_service.turns.protocols import ChatMessage, ToolCallRequest


def module(kind: str, name: str, config: dict[str, object] | None = None) -> ResolvedModule:
    return ResolvedModule(kind, name, "", f"{kind}s[0]", f"pkg:{name}", config or {})


ECHO = module("provider", "provider-echo")
FILES = module("tool", "tool-filesystem")
DELEGATE = module("tool", "tool-delegate")
BASH = module("tool", "tool-bash")


def bundle(*agents: PreparedAgent, modules: tuple[ResolvedModule, ...] = ()) -> PreparedBundle:
    return PreparedBundle(
        tenant_id="t",
        config_id="c",
        revision=3,
        name="team",
        document={},
        masked={},
        instruction="You lead.",
        modules=modules or (ECHO, FILES, DELEGATE),
        composed_from=("team",),
        included_configs=frozenset(),
        default_provider="provider-echo",
        default_provider_field="providers[0]",
        agents=agents,
    )


def test_an_agent_without_modules_of_its_own_inherits_all_but_the_excluded_tools() -> None:
    parent = bundle(PreparedAgent("helper", "Helps.", "team:agents/helper", "You help."))
    child = for_agent(parent, "helper", ("delegate",))
    assert child.instruction == "You help."
    assert [m.module for m in child.modules] == ["provider-echo", "tool-filesystem"]
    assert (child.default_provider, child.revision) == ("provider-echo", 3)


def test_tools_the_agent_names_itself_are_kept_even_when_excluded() -> None:
    agent = PreparedAgent(
        "builder",
        "Builds.",
        "team:agents/builder",
        "",
        modules=(ECHO, FILES, DELEGATE, BASH),
        declared_tools=frozenset({"tool-delegate", "tool-bash"}),
        default_provider="provider-echo",
        default_provider_field="providers[0]",
    )
    child = for_agent(bundle(agent), "builder", ("delegate", "tool-bash", "filesystem"))
    # Inherited filesystem is excluded by its short name; the agent's own tools stay.
    assert [m.module for m in child.modules] == ["provider-echo", "tool-delegate", "tool-bash"]
    # No instruction of its own: the parent's.
    assert child.instruction == "You lead."


def test_self_is_the_bundle_itself_and_unknown_agents_are_refused() -> None:
    parent = bundle()
    child = for_agent(parent, SELF_AGENT, ("delegate",))
    assert child.instruction == "You lead."
    assert [m.module for m in child.modules] == ["provider-echo", "tool-filesystem"]
    with pytest.raises(KeyError):
        for_agent(parent, "nobody", ())


def test_exclusions_come_from_the_delegate_module_settings() -> None:
    assert spawn_exclusions(bundle()) == ("delegate", "task")
    configured = module("tool", "tool-delegate", {"settings": {"exclude_tools": ["bash"]}})
    assert spawn_exclusions(bundle(modules=(ECHO, configured))) == ("bash",)
    assert spawn_exclusions(bundle(modules=(ECHO, FILES))) == ("delegate", "task")
    # An empty list means children inherit everything; the bundle's spawn section adds.
    none = module("tool", "tool-delegate", {"settings": {"exclude_tools": []}})
    assert spawn_exclusions(bundle(modules=(ECHO, none))) == ()
    spawned = dataclasses.replace(
        bundle(modules=(ECHO, none)), document={"spawn": {"exclude_tools": ["tool-task"]}}
    )
    assert spawn_exclusions(spawned) == ("tool-task",)


CONVERSATION = [
    ChatMessage("user", "Find the bug"),
    ChatMessage(
        "assistant",
        "Looking.",
        tool_calls=(
            ToolCallRequest("c1", "read_file", "{}"),
            ToolCallRequest("c2", "delegate", "{}"),
        ),
    ),
    ChatMessage("tool", "file text", tool_call_id="c1"),
    ChatMessage("tool", '{"response": "it is in parse()"}', tool_call_id="c2"),
    ChatMessage("assistant", "Found it."),
]


def test_context_scope_picks_what_the_agent_sees() -> None:
    conversation = render_context(CONVERSATION, "conversation")
    assert conversation == (
        "<parent_context>\n[user]: Find the bug\n[assistant]: Looking.\n"
        "[assistant]: Found it.\n</parent_context>"
    )
    agents = render_context(CONVERSATION, "agents")
    assert '[tool result: delegate]: {"response": "it is in parse()"}' in agents
    assert "file text" not in agents
    full = render_context(CONVERSATION, "full")
    assert "[tool result: read_file]: file text" in full
    assert render_context([], "full") == ""
