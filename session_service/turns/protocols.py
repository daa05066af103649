"""The contracts that provider, tool, context, orchestrator and hook modules implement.

A module class is constructed from its bundle entry's `config` mapping (with `${VAR}`
references already expanded) when a turn needs it. Nothing here knows about gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ChatRole = Literal["user", "assistant", "tool"]

# Model calls a turn may make when neither its orchestrator nor the bundle's
# `session.max_iterations` says: a turn always has a bound.
DEFAULT_MAX_ITERATIONS = 10


@dataclass(frozen=True)
class ToolCallRequest:
    """A tool call the model asked for; arguments_json is the raw JSON object text."""

    tool_call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation sent to a provider."""

    role: ChatRole
    content: str
    # Set on assistant messages that asked for tools.
    tool_calls: tuple[ToolCallRequest, ...] = ()
    # Set on tool messages: which call this is the result of.
    tool_call_id: str = ""
    # Set on tool messages: whether the tool failed.
    is_error: bool = False


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it: its name, what it does, a JSON schema of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ProviderRequest:
    """Everything a provider needs for one model call."""

    system: str
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolSpec] = ()


@dataclass(frozen=True)
class TextDelta:
    """Some of the assistant's reply text."""

    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """Some of the model's reasoning text, when the provider exposes it."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A complete tool call (providers assemble streamed argument fragments first)."""

    call: ToolCallRequest


@dataclass(frozen=True)
class UsageReport:
    """Tokens used by this model call."""

    input_tokens: int
    output_tokens: int
    model: str = ""


@dataclass(frozen=True)
class Finish:
    """The model call ended; stop_reason is the provider's own word, lower case."""

    stop_reason: str


ProviderEvent = TextDelta | ThinkingDelta | ToolCallDelta | UsageReport | Finish


class ProviderError(Exception):
    """A model call failed. code is UPPER_SNAKE (for example PROVIDER_UNAVAILABLE)."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Provider(Protocol):
    """Streams one model call. Cancelling the iteration must stop the underlying request."""

    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]: ...


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned; errors are results the model sees, not exceptions."""

    content: str
    is_error: bool = False


class Tool(Protocol):
    """A module that offers one or more tools to the model.

    Optional class attributes: PARALLEL_CALLS (neighbouring calls in one model response may
    run at once), RUNS_OWN_TIMEOUT (the loop's tool timeout does not apply), AGENTS (built
    with the turn's AgentHost as `agents`).
    """

    def specs(self) -> Sequence[ToolSpec]: ...

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult: ...


@dataclass(frozen=True)
class TurnContext:
    """What a context module builds the provider request from."""

    instruction: str
    transcript: Sequence[ChatMessage]
    # Key/values given to this turn only (SendMessage.context): rendered, never stored.
    turn_context: Mapping[str, Any] = field(default_factory=dict)


class ContextModule(Protocol):
    """Builds the system prompt and message list for a model call."""

    def build(self, context: TurnContext) -> tuple[str, Sequence[ChatMessage]]: ...


@dataclass(frozen=True)
class LoopSettings:
    """What the engine needs of an orchestrator; max_iterations None defers to the bundle."""

    max_iterations: int | None
    tool_timeout_seconds: float
    stream_deltas: bool


class Orchestrator(Protocol):
    """Decides how a turn loops: how many model calls, how long a tool may run, and whether
    the reply streams fragment by fragment."""

    settings: LoopSettings


@dataclass(frozen=True)
class HookResult:
    """What a hook asks of the turn.

    inject_context is text the next model call sees after the conversation (appended to the
    last tool result, or as a user message), for that call only: it is never stored.
    session_name, returned at turn_ending, names a session that has no display_name yet.
    """

    inject_context: str = ""
    session_name: str = ""
    # Returned at tool_approval: "required" pauses the turn until a person decides
    # (DecideApproval), "deny" refuses the call at once; "" lets it run. reason says why;
    # approval_timeout_seconds (None: no limit) is how long a required approval may wait
    # before it counts as denied.
    approval: str = ""
    reason: str = ""
    approval_timeout_seconds: float | None = None


class Hook(Protocol):
    """Observes a turn. Hooks must not raise; a failing hook is logged and skipped.

    Events: turn_start, provider_request (before each model call; its inject_context is
    used), tool_approval (before a model response's tool calls run, once per call, with
    name and arguments; its approval is used), tool_call_start, tool_call_end, turn_ending
    (a completed turn, before its end is stored; its session_name is stored with it) and
    turn_end. Both turn events carry status, user_turns and first_user_message.
    """

    async def on_event(self, event: str, data: Mapping[str, Any]) -> HookResult | None: ...


@dataclass(frozen=True)
class AgentInfo:
    """An agent a turn may hand work to."""

    name: str
    description: str


@dataclass(frozen=True)
class AgentRun:
    """How an agent's turn, in its child session, ended."""

    session_id: str
    turn_id: str
    # COMPLETED, FAILED, CANCELLED, or WAITING (paused for a person's approval).
    outcome: str
    # Its final reply (the partial one when it did not complete).
    text: str
    # Why it failed or was cancelled.
    error: str = ""


# The id of the tool call a task is running: set by the engine around each call, so what a
# tool does on its behalf (an agent's events) names the call even when calls run at once.
CURRENT_TOOL_CALL: ContextVar[str] = ContextVar("tandem_tool_call", default="")


class AgentRefused(Exception):
    """An agent call that cannot start; the message is safe to show the model."""


class AgentHost(Protocol):
    """Runs agents of the session's bundle as child sessions, for tool-delegate and tool-task.

    A tool module that declares `AGENTS = True` is constructed with one, as the keyword
    argument `agents`.
    """

    @property
    def agents(self) -> Sequence[AgentInfo]:
        """The agents of the bundle, by name."""
        ...

    def transcript(self) -> Sequence[ChatMessage]:
        """The parent's conversation so far, this turn included."""
        ...

    async def run(self, agent: str, instruction: str, *, session_id: str = "") -> AgentRun:
        """Runs one turn of the agent in a new child session (or in session_id, an earlier
        child of this session) and waits for it; the parent's log ties it to the tool call
        being run (CURRENT_TOOL_CALL). Cancelling the call cancels that turn. Raises
        AgentRefused when the call cannot start."""
        ...
