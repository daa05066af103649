"""Domain values of turns and the event log. No storage or wire types here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, TypeAlias, TypeVar

from session_service.sessions.model import NUL, Message, Session, storable, storable_message


class EventKind(Enum):
    """What one event of the log says; its value is what the log's kind column holds."""

    TURN_STARTED = "turn_started"
    CONTENT_DELTA = "content_delta"
    THINKING_DELTA = "thinking_delta"
    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    USAGE = "usage"
    TURN_COMPLETED = "turn_completed"
    TURN_FAILED = "turn_failed"
    TURN_CANCELLED = "turn_cancelled"
    AGENT_STARTED = "agent_started"
    AGENT_COMPLETED = "agent_completed"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_DECIDED = "approval_decided"
    SESSION_CREATED = "session_created"
    SESSION_REWOUND = "session_rewound"


TERMINAL_KINDS = frozenset(
    {EventKind.TURN_COMPLETED, EventKind.TURN_FAILED, EventKind.TURN_CANCELLED}
)
# What event retention removes from finished turns: their text is in the transcript.
DELTA_KINDS = frozenset({EventKind.CONTENT_DELTA, EventKind.THINKING_DELTA})


@dataclass(frozen=True)
class TurnStarted:
    """First event of every turn: the user message it answers, and the request that sent it."""

    kind: ClassVar[EventKind] = EventKind.TURN_STARTED
    user_message: Message
    request_id: str


@dataclass(frozen=True)
class ContentDelta:
    """A piece of the assistant's reply."""

    kind: ClassVar[EventKind] = EventKind.CONTENT_DELTA
    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """A piece of the model's reasoning, as the provider streamed it."""

    kind: ClassVar[EventKind] = EventKind.THINKING_DELTA
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    """A tool call the model asked for, before it runs."""

    kind: ClassVar[EventKind] = EventKind.TOOL_CALL_STARTED
    tool_call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class ToolCallCompleted:
    """What a tool call returned."""

    kind: ClassVar[EventKind] = EventKind.TOOL_CALL_COMPLETED
    tool_call_id: str
    result: str
    is_error: bool


@dataclass(frozen=True)
class Usage:
    """Tokens one model call used, as the provider module (and model) reported them."""

    kind: ClassVar[EventKind] = EventKind.USAGE
    input_tokens: int
    output_tokens: int
    provider: str
    model: str


@dataclass(frozen=True)
class TurnCompleted:
    """Final event of a turn that ended normally, with the final assistant message."""

    kind: ClassVar[EventKind] = EventKind.TURN_COMPLETED
    stop_reason: str
    message: Message


@dataclass(frozen=True)
class TurnFailed:
    """Final event of a turn that failed: a canonical code name and what happened."""

    kind: ClassVar[EventKind] = EventKind.TURN_FAILED
    code: str
    message: str


@dataclass(frozen=True)
class TurnCancelled:
    """Final event of a turn stopped by CancelTurn, with the partial reply that was kept."""

    kind: ClassVar[EventKind] = EventKind.TURN_CANCELLED
    reason: str
    partial_message: Message | None


@dataclass(frozen=True)
class AgentStarted:
    """A tool call handed work to an agent, running as a child session."""

    kind: ClassVar[EventKind] = EventKind.AGENT_STARTED
    tool_call_id: str
    agent: str
    session_id: str
    child_turn_id: str
    resumed: bool


@dataclass(frozen=True)
class AgentCompleted:
    """The agent's turn ended: COMPLETED, FAILED or CANCELLED, and why when it did not."""

    kind: ClassVar[EventKind] = EventKind.AGENT_COMPLETED
    tool_call_id: str
    agent: str
    session_id: str
    child_turn_id: str
    outcome: str
    error_message: str


@dataclass(frozen=True)
class ApprovalRequested:
    """A tool call waits for a person's decision (DecideApproval); the turn pauses."""

    kind: ClassVar[EventKind] = EventKind.APPROVAL_REQUESTED
    tool_call_id: str
    name: str
    arguments_json: str
    # When it is denied on its own; None: it waits as long as it takes.
    expire_time: datetime | None


@dataclass(frozen=True)
class ApprovalDecided:
    """A waiting tool call was approved or denied (denied too when its time ran out)."""

    kind: ClassVar[EventKind] = EventKind.APPROVAL_DECIDED
    tool_call_id: str
    approved: bool
    reason: str


@dataclass(frozen=True)
class SessionCreated:
    """A session made by a one-call SendMessage (config_id): the session as created.

    It belongs to no turn. It is the session's first event (sequence 1), written in the
    transaction that creates the session, so a replay from 0 shows where the session came
    from, and the turn that follows keeps TurnStarted as its own first event.
    """

    kind: ClassVar[EventKind] = EventKind.SESSION_CREATED
    session: Session


@dataclass(frozen=True)
class SessionRewound:
    """RewindSession cut the transcript back to a message; it belongs to no turn.

    Later turns see the transcript up to to_sequence. The log keeps every earlier event, so
    what the removed messages said stays readable there.
    """

    kind: ClassVar[EventKind] = EventKind.SESSION_REWOUND
    to_message_id: str
    to_sequence: int
    removed_messages: int


# What one event says: exactly one of these.
EventBody: TypeAlias = (
    TurnStarted
    | ContentDelta
    | ThinkingDelta
    | ToolCallStarted
    | ToolCallCompleted
    | Usage
    | TurnCompleted
    | TurnFailed
    | TurnCancelled
    | AgentStarted
    | AgentCompleted
    | ApprovalRequested
    | ApprovalDecided
    | SessionCreated
    | SessionRewound
)


@dataclass(frozen=True)
class Event:
    """One logged event: its place in the session's log and what it says."""

    sequence: int
    turn_id: str
    body: EventBody
    event_time: datetime

    @property
    def kind(self) -> EventKind:
        """What kind of event this is."""
        return self.body.kind

    @property
    def terminal(self) -> bool:
        """True for the one event that ends a turn."""
        return self.body.kind in TERMINAL_KINDS


class TurnStatus(Enum):
    """Where a turn is."""

    RUNNING = "RUNNING"
    # Paused for approvals: nothing runs it and it holds no lease; a decision resumes it on
    # whichever replica receives it.
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Turn:
    """A turn as stored."""

    session_id: str
    turn_id: str
    request_id: str
    status: TurnStatus
    first_sequence: int
    last_sequence: int
    cancel_requested: bool
    runner: str
    lease_expires: datetime
    create_time: datetime
    end_time: datetime | None = None


B = TypeVar("B", bound=EventBody)


def storable_body(body: B) -> B:
    """The event body as it will be stored: its text, and any message it carries, NUL-free."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(body):
        value = getattr(body, field.name)
        if isinstance(value, str):
            if NUL in value:
                changes[field.name] = storable(value)
        elif isinstance(value, Message):
            stored = storable_message(value)
            if stored is not value:
                changes[field.name] = stored
    return dataclasses.replace(body, **changes) if changes else body


class ApprovalStatus(Enum):
    """Where one tool call's approval is."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    # Its turn ended (cancelled) before anyone decided.
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class Approval:
    """A tool call of a waiting turn that needs a person's decision."""

    session_id: str
    turn_id: str
    tool_call_id: str
    name: str
    arguments_json: str
    status: ApprovalStatus
    create_time: datetime
    expire_time: datetime | None = None
    reason: str = ""
    decide_time: datetime | None = None
