"""Typed results of the Tandem client: frozen dataclasses, never generated messages.

Timestamps are timezone-aware datetimes (UTC) or None when unset; enums are their short
names ("ACTIVE", "BUNDLE", "ASSISTANT", "ERROR"). Reads no config keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from tandem_client.errors import TandemError

T = TypeVar("T")

# The kinds of events that end a turn.
TERMINAL_KINDS = frozenset({"turn_completed", "turn_failed", "turn_cancelled"})


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list call; pass `next_page_token` back for the next ("" at the end)."""

    items: list[T]
    next_page_token: str = ""
    total_size: int = 0

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Violation:
    """One problem found in a bundle document, located by field, line and column."""

    field: str
    line: int
    column: int
    message: str
    severity: str  # "ERROR" or "WARNING"


@dataclass(frozen=True)
class BundleSummary:
    """What a bundle document declares."""

    name: str = ""
    version: str = ""
    description: str = ""
    providers: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    orchestrator: str = ""
    context: str = ""
    has_instruction: bool = False


@dataclass(frozen=True)
class Config:
    """A stored bundle config at one revision; `etag` guards updates."""

    config_id: str
    name: str
    description: str
    yaml_content: str
    tags: dict[str, str]
    revision: int
    etag: str
    create_time: datetime | None
    update_time: datetime | None
    summary: BundleSummary
    kind: str  # "BUNDLE", "AGENT" or "CONTEXT"
    namespace: str = ""
    path: str = ""
    source_uri: str = ""
    warnings: list[Violation] = field(default_factory=list)


@dataclass(frozen=True)
class ConfigChange:
    """One entry of the config change stream: ids only, never content."""

    sequence: int
    type: str  # "CREATED", "UPDATED" or "DELETED"
    config_id: str
    revision: int
    etag: str
    name: str
    change_time: datetime | None


@dataclass(frozen=True)
class ValidationResult:
    """What ValidateConfig found; `valid` is False when any violation is an ERROR."""

    valid: bool
    violations: list[Violation]
    summary: BundleSummary


@dataclass(frozen=True)
class ImportResult:
    """The outcome of importing a bundle package."""

    namespace: str
    configs: list[Config]
    warnings: list[Violation]
    created: int
    updated: int
    unchanged: int
    deleted: int


@dataclass(frozen=True)
class Session:
    """A conversation prepared from one revision of a config."""

    session_id: str
    config_id: str
    config_revision: int
    status: str  # "CREATED", "ACTIVE", "COMPLETED", "FAILED" or "TERMINATED"
    error_message: str
    message_count: int
    last_sequence: int
    active_turn_id: str
    tags: dict[str, str]
    create_time: datetime | None
    update_time: datetime | None
    etag: str
    parent_session_id: str = ""
    agent: str = ""
    display_name: str = ""
    # Set on a session made by a fork: the session and the message sequence it was cut at.
    forked_from_session_id: str = ""
    forked_from_sequence: int = 0


@dataclass(frozen=True)
class ToolCall:
    """A tool invocation the assistant asked for."""

    tool_call_id: str
    name: str
    arguments_json: str

    def arguments(self) -> Any:
        """The arguments, decoded from JSON."""
        return json.loads(self.arguments_json or "{}")


@dataclass(frozen=True)
class Message:
    """One entry of a session's transcript."""

    message_id: str
    role: str  # "USER", "ASSISTANT", "TOOL" or "SYSTEM"
    content: str
    tool_calls: list[ToolCall]
    tool_call_id: str
    sequence: int
    create_time: datetime | None
    turn_id: str = ""


@dataclass(frozen=True)
class Usage:
    """Tokens a provider reported for one model call."""

    input_tokens: int
    output_tokens: int
    provider: str
    model: str


@dataclass(frozen=True)
class Event:
    """One entry of a session's event log.

    `kind` names the event: "turn_started", "content_delta", "thinking_delta",
    "tool_call_started", "tool_call_completed", "usage", "turn_completed", "turn_failed",
    "turn_cancelled", "agent_started", "agent_completed", "approval_requested",
    "approval_decided", "session_created" or "session_rewound". Only the fields of that kind
    are set; the others keep their defaults.
    """

    sequence: int
    turn_id: str
    time: datetime | None
    kind: str
    # content_delta, thinking_delta
    text: str = ""
    # tool_call_started/completed, approval_requested/decided, agent_started/completed
    tool_call_id: str = ""
    # tool_call_started, approval_requested: the tool; agent_*: the agent's name
    name: str = ""
    arguments_json: str = ""
    # tool_call_completed
    result: str = ""
    is_error: bool = False
    usage: Usage | None = None
    # turn_started: the user message; turn_completed: the reply; turn_cancelled: what was kept
    message: Message | None = None
    request_id: str = ""
    stop_reason: str = ""
    # turn_failed: the error as a unary call would raise it
    error: TandemError | None = field(default=None, compare=False)
    # turn_cancelled, approval_decided
    reason: str = ""
    # agent_started/completed: the child session and its turn
    child_session_id: str = ""
    child_turn_id: str = ""
    resumed: bool = False
    outcome: str = ""
    error_message: str = ""
    # approval_requested
    expire_time: datetime | None = None
    # approval_decided
    approved: bool = False
    # session_created: the session a one-call chat made (it belongs to no turn)
    session: Session | None = None
    # session_rewound: the last message kept, its sequence, and how many messages went
    to_message_id: str = ""
    to_sequence: int = 0
    removed_messages: int = 0

    @property
    def terminal(self) -> bool:
        """True for the event that ends a turn (completed, failed or cancelled)."""
        return self.kind in TERMINAL_KINDS

    def arguments(self) -> Any:
        """A tool call's arguments, decoded from JSON."""
        return json.loads(self.arguments_json or "{}")


@dataclass(frozen=True)
class ChatResult:
    """A whole turn: its events, the streamed reply text and how it ended."""

    turn_id: str
    events: list[Event]

    @property
    def text(self) -> str:
        """The reply: every content delta of the turn, joined."""
        return text_of(self.events)

    @property
    def outcome(self) -> str:
        """ "COMPLETED", "FAILED", "CANCELLED", or "" when the turn has not ended."""
        if self.events and self.events[-1].terminal:
            return self.events[-1].kind.removeprefix("turn_").upper()
        return ""

    @property
    def message(self) -> Message | None:
        """The stored assistant message of a completed turn."""
        last = self.events[-1] if self.events else None
        return last.message if last is not None and last.kind == "turn_completed" else None


@dataclass(frozen=True)
class ApprovalDecision:
    """What DecideApproval did: the turn, whether it resumed, and calls still waiting."""

    turn_id: str
    resumed: bool
    pending_tool_call_ids: list[str]


@dataclass(frozen=True)
class PreparedModule:
    """A module a prepared bundle resolved to an installed implementation."""

    kind: str
    module: str
    source: str
    field: str
    implementation: str


@dataclass(frozen=True)
class PreparedAgent:
    """An agent a prepared bundle offers."""

    name: str
    description: str
    source: str


@dataclass(frozen=True)
class PreparedContext:
    """A context file loaded into the system context."""

    name: str
    origin: str
    size_bytes: int


@dataclass(frozen=True)
class PrepareResult:
    """A dry run of preparing a session from a config revision."""

    config_id: str
    revision: int
    valid: bool
    violations: list[Violation]
    warnings: list[Violation]
    composed_yaml: str
    instruction: str
    modules: list[PreparedModule]
    composed_from: list[str]
    default_provider: str
    agents: list[PreparedAgent]
    context: list[PreparedContext]


def text_of(events: Sequence[Event]) -> str:
    """The streamed reply text: the content deltas of events, joined."""
    return "".join(e.text for e in events if e.kind == "content_delta")


__all__ = [
    "TERMINAL_KINDS",
    "ApprovalDecision",
    "BundleSummary",
    "ChatResult",
    "Config",
    "ConfigChange",
    "Event",
    "ImportResult",
    "Message",
    "Page",
    "PrepareResult",
    "PreparedAgent",
    "PreparedContext",
    "PreparedModule",
    "Session",
    "ToolCall",
    "Usage",
    "ValidationResult",
    "Violation",
    "text_of",
]
