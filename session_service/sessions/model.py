"""Domain values of SessionService. No storage or wire types here."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar, cast

from shared.errors import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation
from shared.identifiers import check_id, tag_violations
from shared.visibility import Visibility, visibility_named


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
    # The service ends a session that stayed idle past its ttl, as CompleteSession would,
    # from either open status.
    EXPIRE = "expire"


# (statuses it may start from, status it leads to)
TRANSITIONS: Mapping[Transition, tuple[frozenset[Status], Status]] = {
    Transition.START: (frozenset({Status.CREATED}), Status.ACTIVE),
    Transition.COMPLETE: (frozenset({Status.ACTIVE}), Status.COMPLETED),
    Transition.FAIL: (frozenset({Status.CREATED, Status.ACTIVE}), Status.FAILED),
    Transition.TERMINATE: (frozenset({Status.CREATED, Status.ACTIVE}), Status.TERMINATED),
    Transition.RESUME: (frozenset({Status.COMPLETED, Status.TERMINATED}), Status.ACTIVE),
    Transition.EXPIRE: (frozenset({Status.CREATED, Status.ACTIVE}), Status.COMPLETED),
}

OPEN_STATUSES = frozenset({Status.CREATED, Status.ACTIVE})
ENDING_TRANSITIONS = frozenset(
    {Transition.COMPLETE, Transition.FAIL, Transition.TERMINATE, Transition.EXPIRE}
)
# completion_reason of a session the service completed because nothing happened in it.
IDLE_TIMEOUT = "IDLE_TIMEOUT"


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
    # A child session runs one agent of its parent's bundle for the parent's turns.
    parent_session_id: str = ""
    agent: str = ""
    display_name: str = ""
    # Idle limit and retention, in seconds (0: none). Every write is activity, so each one
    # moves idle_expire_time; once the session ends, delete_time says when it goes.
    ttl_seconds: float = 0.0
    delete_after_seconds: float = 0.0
    last_activity_time: datetime | None = None
    idle_expire_time: datetime | None = None
    delete_time: datetime | None = None
    completion_reason: str = ""
    # Turns waiting in the session's queue behind its active one (SendMessage if_busy).
    queued_turns: int = 0
    # Event retention compacted the deltas of every turn up to this sequence: a replay must
    # start after it. Only compaction moves it; it is no activity and no new version.
    compacted_through: int = 0
    # Set on a session ForkSession made: the session and the Message.sequence it was cut at.
    forked_from_session_id: str = ""
    forked_from_sequence: int = 0
    # The bundle fragment composed last over the config for this session (CreateSession
    # overrides), as given; "" for none. It never changes, and every preparation of the
    # session's bundle (turns, agents, resume with upgrade_config) passes it.
    overrides: str = ""
    # Who created it (the caller's subject) and their team then, and who else sees it. Set
    # at create only; a child session takes its parent's.
    owner: str = ""
    visibility: Visibility = Visibility.PRIVATE
    team: str = ""

    @property
    def etag(self) -> str:
        """Changes with every write of the session."""
        return f"{self.session_id}:{self.version}"

    def _written(self, now: datetime, **changes: Any) -> Session:
        # Every write of a session is a new version at a new update time, and activity: the
        # idle deadline moves with it here, so no write can forget it.
        written = {**self.lifetime(now, changes.get("status", self.status)), **changes}
        return dataclasses.replace(self, version=self.version + 1, update_time=now, **written)

    def lifetime(self, now: datetime, status: Status) -> dict[str, Any]:
        """The activity fields of the session written at now with status."""
        if status in OPEN_STATUSES:
            expire = now + timedelta(seconds=self.ttl_seconds) if self.ttl_seconds else None
            return {
                "last_activity_time": now,
                "idle_expire_time": expire,
                "delete_time": None,
                "completion_reason": "",
            }
        delete_time = self.delete_time
        if self.status in OPEN_STATUSES:
            # It ends now: retention counts from here.
            delete_time = (
                now + timedelta(seconds=self.delete_after_seconds)
                if self.delete_after_seconds
                else None
            )
        return {"last_activity_time": now, "idle_expire_time": None, "delete_time": delete_time}

    def idle_at(self, now: datetime) -> bool:
        """Whether the session stayed idle past its ttl (a running or waiting turn is not
        idle)."""
        return (
            self.status in OPEN_STATUSES
            and not self.active_turn_id
            and self.idle_expire_time is not None
            and self.idle_expire_time <= now
        )

    def deletable_at(self, now: datetime) -> bool:
        """Whether the session ended and its retention ran out."""
        return (
            self.status not in OPEN_STATUSES
            and self.delete_time is not None
            and self.delete_time <= now
        )

    def refuse_during_turn(self, action: str) -> None:
        """TURN_IN_PROGRESS if a turn runs: action cannot happen under it."""
        if self.active_turn_id:
            raise turn_in_progress(self, action)

    def moved(
        self,
        transition: Transition,
        now: datetime,
        *,
        error_message: str = "",
        config_revision: int = 0,
    ) -> Session:
        """The session after a lifecycle transition (FAILED_PRECONDITION when illegal).

        A session ends (complete, fail, terminate) only between turns. A resume may move it
        to a newer config revision.
        """
        status = next_status(self.session_id, self.status, transition)
        if transition in ENDING_TRANSITIONS:
            self.refuse_during_turn(transition.value)
        return self._written(
            now,
            status=status,
            error_message=error_message if transition is Transition.FAIL else "",
            config_revision=config_revision or self.config_revision,
            completion_reason=IDLE_TIMEOUT if transition is Transition.EXPIRE else "",
        )

    def with_message(self, message: Message, now: datetime) -> Session:
        """The session after message was added to its transcript between turns."""
        if self.status not in OPEN_STATUSES:
            raise wrong_status(
                self,
                "CREATED or ACTIVE",
                "messages can only be added to CREATED or ACTIVE sessions.",
                "SESSION_CLOSED",
            )
        self.refuse_during_turn("append a message to")
        return self._written(now, message_count=message.sequence)

    def check_rewind(self) -> None:
        """A transcript is cut back only in an open session, between turns."""
        if self.status not in OPEN_STATUSES:
            raise wrong_status(
                self,
                "CREATED or ACTIVE",
                "only CREATED or ACTIVE sessions can be rewound.",
                "SESSION_CLOSED",
            )
        self.refuse_during_turn("rewind")

    def rewound(self, to_sequence: int, event_sequence: int, now: datetime) -> Session:
        """The session after its transcript was cut back to to_sequence between turns, with
        the event that records it at event_sequence; new messages continue after the cut."""
        self.check_rewind()
        return self._written(now, message_count=to_sequence, last_sequence=event_sequence)

    def check_turn_can_begin(self) -> None:
        """Turns run only in ACTIVE sessions, one at a time."""
        if self.status is not Status.ACTIVE:
            raise session_not_active(self)
        if self.active_turn_id:
            raise turn_in_progress(self)

    def turn_begun(
        self,
        turn_id: str,
        sequence: int,
        message_count: int,
        now: datetime,
        *,
        dequeued: bool = False,
    ) -> Session:
        """The session running turn_id, whose first event takes sequence (dequeued: the
        turn waited in the session's queue, and leaves it)."""
        self.check_turn_can_begin()
        return self._written(
            now,
            active_turn_id=turn_id,
            last_sequence=sequence,
            message_count=message_count,
            queued_turns=self.queued_turns - 1 if dequeued else self.queued_turns,
        )

    def turn_queued(self, now: datetime) -> Session:
        """The session with one more turn waiting behind its active one (ACTIVE only)."""
        if self.status is not Status.ACTIVE:
            raise session_not_active(self)
        return self._written(now, queued_turns=self.queued_turns + 1)

    def turn_written(
        self,
        last_sequence: int,
        messages_added: int,
        now: datetime,
        *,
        ended: bool = False,
        display_name: str = "",
    ) -> Session:
        """The session after its running turn wrote events up to last_sequence (and ended).

        display_name names the session, unless it has a name already.
        """
        return self._written(
            now,
            last_sequence=last_sequence,
            message_count=self.message_count + messages_added,
            active_turn_id="" if ended else self.active_turn_id,
            display_name=self.display_name or display_name,
        )


MAX_APPENDED_CHARS = 1_000_000


def check_session_id(session_id: str) -> None:
    """Refuses ids that are not short, URL-safe identifiers."""
    check_id(session_id, "session_id", "INVALID_SESSION_ID")


def check_tags(tags: Mapping[str, str]) -> None:
    """Refuses tag sets outside their limits."""
    violations = tag_violations(tags)
    if violations:
        raise InvalidArgument("Invalid tags.", reason="INVALID_TAGS", violations=violations)


MAX_DISPLAY_NAME_CHARS = 256


def display_name_problem(name: str) -> str:
    """What is wrong with a display name ("" when nothing is)."""
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        return f"at most {MAX_DISPLAY_NAME_CHARS} characters"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "must not contain control characters"
    return ""


def check_display_name(name: str) -> None:
    """Refuses a display name a listing could not show on one line."""
    problem = display_name_problem(name)
    if problem:
        raise InvalidArgument(
            f"Invalid display_name: {problem}.",
            reason="INVALID_DISPLAY_NAME",
            violations=[FieldViolation("display_name", problem)],
        )


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
        "parent_session_id": session.parent_session_id,
        "agent": session.agent,
        "display_name": session.display_name,
        "ttl_seconds": session.ttl_seconds,
        "delete_after_seconds": session.delete_after_seconds,
        "last_activity_time": _time_json(session.last_activity_time),
        "idle_expire_time": _time_json(session.idle_expire_time),
        "delete_time": _time_json(session.delete_time),
        "completion_reason": session.completion_reason,
        "queued_turns": session.queued_turns,
        "forked_from_session_id": session.forked_from_session_id,
        "forked_from_sequence": session.forked_from_sequence,
        "overrides": session.overrides,
        "owner": session.owner,
        "visibility": session.visibility.value,
        "team": session.team,
    }


def _time_json(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time_from_json(value: Any) -> datetime | None:
    return None if not value else datetime.fromisoformat(value)


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
        # Absent from responses recorded before child sessions and names existed.
        parent_session_id=data.get("parent_session_id", ""),
        agent=data.get("agent", ""),
        display_name=data.get("display_name", ""),
        # Absent from responses recorded before sessions had lifetimes.
        ttl_seconds=float(data.get("ttl_seconds", 0.0)),
        delete_after_seconds=float(data.get("delete_after_seconds", 0.0)),
        last_activity_time=_time_from_json(data.get("last_activity_time")),
        idle_expire_time=_time_from_json(data.get("idle_expire_time")),
        delete_time=_time_from_json(data.get("delete_time")),
        completion_reason=data.get("completion_reason", ""),
        # Absent from responses recorded before turns could be queued.
        queued_turns=int(data.get("queued_turns", 0)),
        # Absent from responses recorded before forks existed.
        forked_from_session_id=data.get("forked_from_session_id", ""),
        forked_from_sequence=int(data.get("forked_from_sequence", 0)),
        # Absent from responses recorded before sessions had overrides.
        overrides=data.get("overrides", ""),
        # Absent from responses recorded before visibility: such sessions are the tenant's.
        owner=data.get("owner", ""),
        visibility=visibility_named(data.get("visibility", "ORG")),
        team=data.get("team", ""),
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


T = TypeVar("T")

# PostgreSQL refuses U+0000 in text and in JSONB, while SQLite would keep it. Rather than one
# database failing (and a turn with it) on a binary file a tool read, both store the
# replacement character: a log reads the same wherever it is stored, and in memory too.
NUL = "\x00"
NUL_REPLACEMENT = "\ufffd"


def storable(value: T) -> T:
    """value with every U+0000 in its text (nested in mappings and lists too) made U+FFFD."""
    if isinstance(value, str):
        return cast(T, value.replace(NUL, NUL_REPLACEMENT)) if NUL in value else value
    if isinstance(value, Mapping):
        return cast(T, {storable(key): storable(item) for key, item in value.items()})
    if isinstance(value, list):
        return cast(T, [storable(item) for item in value])
    if isinstance(value, tuple):
        return cast(T, tuple(storable(item) for item in value))
    return value


def storable_message(message: Message) -> Message:
    """The message as it will be stored."""
    if not (NUL in message.content or NUL in message.tool_call_id) and not any(
        NUL in c.name or NUL in c.arguments_json or NUL in c.tool_call_id
        for c in message.tool_calls
    ):
        return message
    return dataclasses.replace(
        message,
        content=storable(message.content),
        tool_call_id=storable(message.tool_call_id),
        tool_calls=tuple(
            ToolCall(storable(c.tool_call_id), storable(c.name), storable(c.arguments_json))
            for c in message.tool_calls
        ),
    )


def wrong_status(session: Session, allowed: str, rule: str, reason: str) -> FailedPrecondition:
    """FAILED_PRECONDITION for a session whose status does not allow what was asked."""
    return FailedPrecondition(
        f"Session {session.session_id!r} is {session.status.value}; {rule}",
        reason=reason,
        metadata={"status": session.status.value},
        violations=[
            PreconditionViolation(
                "SESSION_STATUS", f"sessions/{session.session_id}", f"must be {allowed}"
            )
        ],
    )


def session_not_active(session: Session) -> FailedPrecondition:
    """SESSION_NOT_ACTIVE: turns run only in ACTIVE sessions."""
    return wrong_status(
        session,
        "ACTIVE",
        "turns run only in ACTIVE sessions (StartSession, or ResumeSession a finished one).",
        "SESSION_NOT_ACTIVE",
    )
