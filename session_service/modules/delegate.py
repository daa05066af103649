"""Hands work to the bundle's agents (`tool-delegate`, and its older form `tool-task`).

Each call runs one turn of an agent in a child session (see session_service/turns/agents.py):
its events stream into the child's own log, the parent's log records AgentStarted and
AgentCompleted, and the agent's final reply is the call's result, as JSON
`{"response": ..., "session_id": ...}`. Passing that session_id back continues the same child.
An agent that fails or is cancelled is a tool error for the parent, never a dead turn.

tool-delegate config keys (Amplifier's names):
- `features.self_delegation.enabled` (default true): whether agent="self" (the bundle itself
  as a child) is offered.
- `features.session_resume.enabled` (default true): whether session_id may continue a child.
- `features.context_inheritance.enabled` (default true) and `.max_turns` (default 10): whether
  and how much of the parent's conversation (context_depth, context_turns, context_scope)
  the agent is given, ahead of its instruction.
- `settings.exclude_tools` (default ["delegate", "task"]): tools children do not inherit.
  A tool the agent file names itself is kept. Read when the child's bundle is made (see
  session_service/prepare/spawn.py).
- `settings.timeout`: seconds an agent's turn may take before it is cancelled (default: no
  limit of its own; the agent's turn is bounded by its own iterations and tool timeouts).
The `provider_preferences` argument is accepted and not used: an agent runs on the providers
its bundle gives it. `features.provider_selection` and `settings.exclude_hooks` are not read.

tool-task reads no config keys; its calls take agent, instruction and session_id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from session_service.prepare.spawn import SELF_AGENT
from session_service.turns.protocols import (
    AgentHost,
    AgentRefused,
    AgentRun,
    ChatMessage,
    ToolResult,
    ToolSpec,
)
from session_service.workspace import Sandbox

DEFAULT_CONTEXT_TURNS = 5
DEFAULT_MAX_CONTEXT_TURNS = 10
# What the parent's conversation may add to an agent's instruction: well inside what one
# message may hold, and the most recent part is what is kept.
MAX_CONTEXT_CHARS = 64 * 1024
AGENT_TOOL_NAMES = frozenset({"delegate", "task"})

DELEGATE_DESCRIPTION = """Spawn a specialized agent to handle tasks autonomously.

Delegation hands a self-contained piece of work to an agent, which runs in a session of its
own and returns only its final answer, so your own context stays small.

Use this tool when:
- Task requires reading more than 2 files
- Task requires exploration or investigation
- Task matches any agent's specialty (check Available agents below)
- Task would benefit from specialized context or tools

Special agent values:"""

TASK_DESCRIPTION = """Launch a new agent to handle complex, multi-step tasks autonomously.

The task tool launches specialized agents that autonomously handle complex tasks. Each agent
type has specific capabilities and tools available to it. Specify the agent parameter to
select which agent type to use.

Usage notes:
- Launch multiple agents concurrently whenever possible: use a single message with multiple
  tool uses.
- When the agent is done, it will return a single message back to you. The result returned
  by the agent is not visible to the user; summarize it for them.
- Each agent invocation starts fresh: give it a detailed task description and say exactly
  what it should return. To re-engage an agent, pass the session_id from its response.
"""


def _flag(config: Mapping[str, Any], *path: str, default: bool = True) -> bool:
    value: Any = config
    for key in path:
        if not isinstance(value, Mapping):
            return default
        value = value.get(key)
    return value if isinstance(value, bool) else default


def _nested(config: Mapping[str, Any], section: str, key: str) -> Any:
    part = config.get(section)
    return part.get(key) if isinstance(part, Mapping) else None


def _agent_list(agents: AgentHost) -> str:
    lines = [f"  - {a.name}: {a.description or 'No description'}" for a in agents.agents]
    return "\n".join(lines)


def _result(run: AgentRun) -> ToolResult:
    if run.outcome == "COMPLETED":
        return ToolResult(json.dumps({"response": run.text, "session_id": run.session_id}))
    body = {
        "error": f"the agent's turn {run.outcome.lower()}: {run.error}",
        "session_id": run.session_id,
    }
    if run.text:
        body["partial_response"] = run.text
    return ToolResult(json.dumps(body), is_error=True)


class _AgentTool:
    """What delegate and task share: validate, run the agent, shape the result."""

    RUNS_OWN_TIMEOUT = True
    AGENTS = True
    # Agents in one model response work side by side: each in a session of its own.
    PARALLEL_CALLS = True

    def __init__(self, agents: AgentHost, *, resume: bool, timeout: float | None) -> None:
        self._agents = agents
        self._resume = resume
        self._timeout = timeout

    async def _run(self, arguments: Mapping[str, Any], context: str = "") -> ToolResult:
        instruction = arguments.get("instruction")
        agent = arguments.get("agent") or ""
        session_id = arguments.get("session_id") or ""
        if not isinstance(instruction, str) or not instruction.strip():
            return ToolResult("Instruction cannot be empty", is_error=True)
        if not isinstance(agent, str) or not isinstance(session_id, str):
            return ToolResult("agent and session_id must be strings", is_error=True)
        if session_id and not self._resume:
            return ToolResult("Session resumption is disabled for this bundle", is_error=True)
        if not session_id and not agent:
            return ToolResult(
                "Agent name required for new delegation (or provide session_id to resume)",
                is_error=True,
            )
        text = f"{context}\n\n{instruction}" if context else instruction
        try:
            async with asyncio.timeout(self._timeout):
                run = await self._agents.run(agent, text, session_id=session_id)
        except AgentRefused as exc:
            return ToolResult(f"Delegation failed: {exc}", is_error=True)
        except TimeoutError:
            return ToolResult(
                f"Delegation failed: the agent did not finish within {self._timeout:g}s",
                is_error=True,
            )
        return _result(run)


class DelegateTool(_AgentTool):
    """Offers `delegate`: an agent (or "self") in a child session, with parent context."""

    CONFIG_KEYS: frozenset[str] = frozenset({"features", "settings"})

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox, *, agents: AgentHost) -> None:
        del sandbox  # the agent's turn gets its own session's sandbox
        timeout = _nested(config, "settings", "timeout")
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise ValueError("settings.timeout must be a positive number of seconds")
        max_turns = _nested(config, "features", "context_inheritance")
        limit = max_turns.get("max_turns") if isinstance(max_turns, Mapping) else None
        self._max_turns = (
            limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_CONTEXT_TURNS
        )
        self._self = _flag(config, "features", "self_delegation", "enabled")
        self._inherit = _flag(config, "features", "context_inheritance", "enabled")
        super().__init__(
            agents,
            resume=_flag(config, "features", "session_resume", "enabled"),
            timeout=float(timeout) if timeout is not None else None,
        )
        self._current_call = ""

    def specs(self) -> Sequence[ToolSpec]:
        """The delegate tool, listing the bundle's agents."""
        description = DELEGATE_DESCRIPTION
        if self._self:
            description += (
                '\n- agent="self": Spawn yourself as a sub-agent (maximum token conservation)'
            )
        if self._resume:
            description += (
                "\n- Use session_id to resume an existing agent session (must be full"
                " session_id from previous delegate call)"
            )
        if self._inherit:
            description += (
                "\n\nContext control (two independent parameters):\n- context_depth: HOW MUCH"
                ' context - "none" (clean slate), "recent" (last N turns), "all" (full history)'
                '\n- context_scope: WHICH content - "conversation" (text only), "agents"'
                ' (+ agent results), "full" (+ all tools)'
            )
        description += (
            "\n\nAgent usage notes:\n- Launch multiple agents concurrently when tasks are"
            " independent\n- When an agent completes, it returns a single message back to you"
        )
        listed = _agent_list(self._agents)
        description += (
            f"\n\nAvailable agents:\n{listed}"
            if listed
            else '\n\nNo agents currently registered. Use agent="self".'
        )
        schema = {
            "type": "object",
            "properties": {
                "agent": {
                    "type": "string",
                    "description": "Agent to delegate to (e.g., 'foundation:explorer', 'self',"
                    " or bundle path)",
                },
                "instruction": {"type": "string", "description": "Clear instruction for the agent"},
                "session_id": {
                    "type": "string",
                    "description": "Resume existing agent session (use full session_id from"
                    " previous delegate call)",
                },
                "context_depth": {
                    "type": "string",
                    "enum": ["none", "recent", "all"],
                    "description": "HOW MUCH context: 'none' (clean slate), 'recent' (last N"
                    " turns), 'all' (full history)",
                },
                "context_turns": {
                    "type": "integer",
                    "description": "Number of turns when context_depth is 'recent' (default: 5)",
                },
                "context_scope": {
                    "type": "string",
                    "enum": ["conversation", "agents", "full"],
                    "description": "WHICH content: 'conversation' (user/assistant text),"
                    " 'agents' (+ delegate results), 'full' (+ all tool results)",
                },
                "provider_preferences": {
                    "type": "array",
                    "description": "Ordered list of provider/model preferences with glob"
                    " pattern support",
                    "items": {
                        "type": "object",
                        "properties": {
                            "provider": {"type": "string"},
                            "model": {"type": "string"},
                        },
                        "required": ["provider", "model"],
                    },
                },
            },
            "required": ["instruction"],
        }
        return (ToolSpec("delegate", description, schema),)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs the agent; the parent's context goes ahead of the instruction as asked."""
        agent = arguments.get("agent") or ""
        if agent == SELF_AGENT and not self._self:
            return ToolResult("Self-delegation is disabled for this bundle", is_error=True)
        context = ""
        if self._inherit and not arguments.get("session_id"):
            problem, context = self._context(arguments)
            if problem:
                return ToolResult(problem, is_error=True)
        return await self._run(arguments, context)

    def _context(self, arguments: Mapping[str, Any]) -> tuple[str, str]:
        """(problem, the parent's conversation rendered for the agent)."""
        depth = arguments.get("context_depth", "recent")
        scope = arguments.get("context_scope", "conversation")
        turns = arguments.get("context_turns", DEFAULT_CONTEXT_TURNS)
        if depth not in ("none", "recent", "all"):
            return "context_depth must be none, recent or all", ""
        if scope not in ("conversation", "agents", "full"):
            return "context_scope must be conversation, agents or full", ""
        if not isinstance(turns, int) or isinstance(turns, bool) or turns < 1:
            return "context_turns must be a positive integer", ""
        if depth == "none":
            return "", ""
        messages = list(self._agents.transcript())
        if depth == "recent":
            messages = _recent_turns(messages, min(turns, self._max_turns))
        return "", render_context(messages, scope)


def _recent_turns(messages: list[ChatMessage], turns: int) -> list[ChatMessage]:
    """The last `turns` user turns: from the turns-th last user message on."""
    starts = [i for i, m in enumerate(messages) if m.role == "user"]
    if len(starts) <= turns:
        return messages
    return messages[starts[-turns] :]


def render_context(messages: Sequence[ChatMessage], scope: str) -> str:
    """The parent's conversation as a block of text ahead of an agent's instruction.

    conversation: user and assistant text; agents: also what earlier agents returned; full:
    also every tool result. The most recent part is kept within MAX_CONTEXT_CHARS.
    """
    tool_names = {
        call.tool_call_id: call.name
        for message in messages
        if message.role == "assistant"
        for call in message.tool_calls
    }
    lines: list[str] = []
    for message in messages:
        if message.role in ("user", "assistant"):
            if message.content.strip():
                lines.append(f"[{message.role}]: {message.content.strip()}")
            continue
        name = tool_names.get(message.tool_call_id, "")
        if scope == "full" or (scope == "agents" and name in AGENT_TOOL_NAMES):
            lines.append(f"[tool result: {name or 'unknown'}]: {message.content.strip()}")
    if not lines:
        return ""
    text = "\n".join(lines)
    if len(text) > MAX_CONTEXT_CHARS:
        text = "…" + text[-MAX_CONTEXT_CHARS:]
    return f"<parent_context>\n{text}\n</parent_context>"


class TaskTool(_AgentTool):
    """Offers `task`: the older form of delegate (agent, instruction, session_id)."""

    CONFIG_KEYS: frozenset[str] = frozenset()

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox, *, agents: AgentHost) -> None:
        del config, sandbox
        super().__init__(agents, resume=True, timeout=None)

    def specs(self) -> Sequence[ToolSpec]:
        """The task tool, listing the bundle's agents."""
        listed = _agent_list(self._agents)
        description = (
            f"{TASK_DESCRIPTION}\nAvailable agent types and the tools they have access to:\n"
            f"{listed}"
            if listed
            else "The task tool is currently unavailable because there are no registered agents."
        )
        schema = {
            "type": "object",
            "properties": {
                "agent": {
                    "type": "string",
                    "description": "Agent name for spawning new sub-session (e.g.,"
                    " 'developer-expertise:zen-architect')",
                },
                "instruction": {"type": "string", "description": "Task instruction for the agent"},
                "session_id": {
                    "type": "string",
                    "description": "Optional Session ID to resume (from previous spawn/resume"
                    " response)",
                },
            },
            "required": ["instruction"],
        }
        return (ToolSpec("task", description, schema),)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs the agent on the instruction alone."""
        return await self._run(arguments)
