"""Domain values of turns and the event log. No storage or wire types here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from session_service.sessions.model import Message, Role, ToolCall


class EventKind(Enum):
    """What one event of the log says; the wire's SessionEvent oneof, by field name."""

    TURN_STARTED = "turn_started"
    CONTENT_DELTA = "content_delta"
    THINKING_DELTA = "thinking_delta"
    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    USAGE = "usage"
    TURN_COMPLETED = "turn_completed"
    TURN_FAILED = "turn_failed"
    TURN_CANCELLED = "turn_cancelled"


TERMINAL_KINDS = frozenset(
    {EventKind.TURN_COMPLETED, EventKind.TURN_FAILED, EventKind.TURN_CANCELLED}
)


@dataclass(frozen=True)
class Event:
    """One logged event. payload holds the fields of that kind's wire message."""

    sequence: int
    turn_id: str
    kind: EventKind
    payload: Mapping[str, Any]
    event_time: datetime

    @property
    def terminal(self) -> bool:
        """True for the one event that ends a turn."""
        return self.kind in TERMINAL_KINDS


class TurnStatus(Enum):
    """Where a turn is."""

    RUNNING = "RUNNING"
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


def message_payload(message: Message) -> dict[str, Any]:
    """A transcript message as stored inside an event's payload."""
    return {
        "message_id": message.message_id,
        "role": message.role.value,
        "content": message.content,
        "tool_calls": [
            {"tool_call_id": c.tool_call_id, "name": c.name, "arguments_json": c.arguments_json}
            for c in message.tool_calls
        ],
        "tool_call_id": message.tool_call_id,
        "sequence": message.sequence,
        "create_time": message.create_time.isoformat(),
        "turn_id": message.turn_id,
    }


def message_from_payload(data: Mapping[str, Any]) -> Message:
    """The transcript message an event's payload carries."""
    return Message(
        message_id=str(data["message_id"]),
        role=Role(data["role"]),
        content=str(data["content"]),
        sequence=int(data["sequence"]),
        create_time=datetime.fromisoformat(str(data["create_time"])),
        tool_calls=tuple(ToolCall(**call) for call in data.get("tool_calls") or ()),
        tool_call_id=str(data.get("tool_call_id", "")),
        turn_id=str(data.get("turn_id", "")),
    )
