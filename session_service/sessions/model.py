"""Domain values of SessionService. No storage or wire types here."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from shared.errors import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation


class Status(Enum):
    """Where a session is in its lifecycle."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"


class Role(Enum):
    """Who a transcript message is from."""

    USER = "USER"
    ASSISTANT = "ASSISTANT"
    TOOL = "TOOL"
    SYSTEM = "SYSTEM"


class Transition(Enum):
    """The lifecycle operations; each is legal only from some statuses."""

    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    TERMINATE = "terminate"
    RESUME = "resume"


# (statuses it may start from, status it leads to)
TRANSITIONS: Mapping[Transition, tuple[frozenset[Status], Status]] = {
    Transition.START: (frozenset({Status.CREATED}), Status.ACTIVE),
    Transition.COMPLETE: (frozenset({Status.ACTIVE}), Status.COMPLETED),
    Transition.FAIL: (frozenset({Status.CREATED, Status.ACTIVE}), Status.FAILED),
    Transition.TERMINATE: (frozenset({Status.CREATED, Status.ACTIVE}), Status.TERMINATED),
    Transition.RESUME: (frozenset({Status.COMPLETED, Status.TERMINATED}), Status.ACTIVE),
}

OPEN_STATUSES = frozenset({Status.CREATED, Status.ACTIVE})


def next_status(session_id: str, current: Status, transition: Transition) -> Status:
    """The status after transition, or FAILED_PRECONDITION naming what is allowed."""
    sources, target = TRANSITIONS[transition]
    if current not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise FailedPrecondition(
            f"Cannot {transition.value} session {session_id!r}: it is {current.value} "
            f"(allowed from {allowed}).",
            reason="ILLEGAL_TRANSITION",
            metadata={"status": current.value, "transition": transition.value},
            violations=[
                PreconditionViolation(
                    "SESSION_STATUS",
                    f"sessions/{session_id}",
                    f"{transition.value} requires status {allowed}; it is {current.value}",
                )
            ],
        )
    return target


@dataclass(frozen=True)
class ToolCall:
    """A tool invocation the assistant asked for."""

    tool_call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class Message:
    """One transcript entry."""

    message_id: str
    role: Role
    content: str
    sequence: int
    create_time: datetime
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str = ""
    turn_id: str = ""


@dataclass(frozen=True)
class Session:
    """A session at one moment."""

    session_id: str
    config_id: str
    config_revision: int
    status: Status
    create_time: datetime
    update_time: datetime
    version: int
    tags: Mapping[str, str] = field(default_factory=dict)
    error_message: str = ""
    message_count: int = 0
    last_sequence: int = 0
    active_turn_id: str = ""

    @property
    def etag(self) -> str:
        """Changes with every write of the session."""
        return f"{self.session_id}:{self.version}"


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
MAX_TAGS = 64
MAX_APPENDED_CHARS = 1_000_000


def check_session_id(session_id: str) -> None:
    """Refuses ids that are not short, URL-safe identifiers."""
    if not _ID.fullmatch(session_id):
        raise InvalidArgument(
            "session_id must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            reason="INVALID_SESSION_ID",
            violations=[FieldViolation("session_id", "invalid identifier")],
        )


def check_tags(tags: Mapping[str, str]) -> None:
    """Refuses tag sets outside their limits."""
    violations = []
    if len(tags) > MAX_TAGS:
        violations.append(FieldViolation("tags", f"more than {MAX_TAGS} tags"))
    for key, value in tags.items():
        if not _TAG_KEY.fullmatch(key):
            violations.append(FieldViolation(f"tags[{key!r}]", "invalid tag key"))
        if len(value) > 256:
            violations.append(FieldViolation(f"tags[{key!r}]", "value longer than 256"))
    if violations:
        raise InvalidArgument("Invalid tags.", reason="INVALID_TAGS", violations=violations)


def check_message(
    role: Role | None, content: str, tool_calls: Sequence[ToolCall], tool_call_id: str
) -> Role:
    """Refuses messages that could not have come from a conversation."""
    violations = []
    if role is None:
        violations.append(FieldViolation("message.role", "is required"))
    if len(content) > MAX_APPENDED_CHARS:
        violations.append(
            FieldViolation("message.content", f"longer than {MAX_APPENDED_CHARS} characters")
        )
    if tool_calls and role is not Role.ASSISTANT:
        violations.append(
            FieldViolation("message.tool_calls", "only assistant messages call tools")
        )
    for index, call in enumerate(tool_calls):
        if not call.tool_call_id or not call.name:
            violations.append(
                FieldViolation(f"message.tool_calls[{index}]", "needs tool_call_id and name")
            )
        if call.arguments_json:
            try:
                json.loads(call.arguments_json)
            except ValueError:
                violations.append(
                    FieldViolation(
                        f"message.tool_calls[{index}].arguments_json", "is not valid JSON"
                    )
                )
    if role is Role.TOOL and not tool_call_id:
        violations.append(FieldViolation("message.tool_call_id", "is required on tool messages"))
    if violations or role is None:
        raise InvalidArgument(
            "The message is invalid.", reason="INVALID_MESSAGE", violations=violations
        )
    return role


def session_to_json(session: Session) -> dict[str, object]:
    """A session as plain JSON data (for stored first responses)."""
    return {
        "session_id": session.session_id,
        "config_id": session.config_id,
        "config_revision": session.config_revision,
        "status": session.status.value,
        "create_time": session.create_time.isoformat(),
        "update_time": session.update_time.isoformat(),
        "version": session.version,
        "tags": dict(session.tags),
        "error_message": session.error_message,
        "message_count": session.message_count,
        "last_sequence": session.last_sequence,
        "active_turn_id": session.active_turn_id,
    }


def session_from_json(data: Mapping[str, Any]) -> Session:
    """The inverse of session_to_json."""
    return Session(
        session_id=data["session_id"],
        config_id=data["config_id"],
        config_revision=int(data["config_revision"]),
        status=Status(data["status"]),
        create_time=datetime.fromisoformat(data["create_time"]),
        update_time=datetime.fromisoformat(data["update_time"]),
        version=int(data["version"]),
        tags=dict(data["tags"]),
        error_message=data["error_message"],
        message_count=int(data["message_count"]),
        last_sequence=int(data["last_sequence"]),
        active_turn_id=data["active_turn_id"],
    )


def turn_in_progress(session: Session, action: str = "") -> FailedPrecondition:
    """TURN_IN_PROGRESS for what cannot happen while the session's turn runs.

    Without action, the thing refused is another turn; the metadata names the running turn
    either way, so a client can follow or cancel it.
    """
    if action:
        message = (
            f"Cannot {action} session {session.session_id!r} while turn "
            f"{session.active_turn_id!r} runs; cancel it or wait for it to end."
        )
    else:
        message = (
            f"Session {session.session_id!r} is running turn {session.active_turn_id!r}; one "
            "turn runs at a time. Follow it with StreamEvents, or cancel it with CancelTurn."
        )
    return FailedPrecondition(
        message,
        reason="TURN_IN_PROGRESS",
        metadata={"turn_id": session.active_turn_id, "session_id": session.session_id},
        violations=[
            PreconditionViolation(
                "TURN_IN_PROGRESS", f"sessions/{session.session_id}", "a turn is running"
            )
        ],
    )
