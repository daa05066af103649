"""How an event's body is stored: the JSON of the event log's payload column.

The log's kind column holds the EventKind's value; the payload holds the body's fields and
the schema version it was written in, under VERSION_KEY. Each kind is encoded and decoded by
its own function, so the stored shape is this module's choice, not the wire's or the
dataclasses': renaming a field anywhere else cannot silently change what old logs mean.

Versions:
- 0 (no VERSION_KEY): logs written before events were typed. The payload holds the fields
  of the wire message of that kind, a transcript message as `message_fields` writes it.
- 1: the same fields, with VERSION_KEY. session_created (added later, so never unversioned)
  stores its session as `session_to_json` writes it, under "session". session_rewound
  (added later still) stores to_message_id, to_sequence and removed_messages.
A payload of a version this code does not know is an error, never guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from session_service.sessions.model import (
    Message,
    Role,
    ToolCall,
    session_from_json,
    session_to_json,
)
from session_service.turns.model import (
    AgentCompleted,
    AgentStarted,
    ApprovalDecided,
    ApprovalRequested,
    ContentDelta,
    EventBody,
    EventKind,
    SessionCreated,
    SessionRewound,
    ThinkingDelta,
    ToolCallCompleted,
    ToolCallStarted,
    TurnCancelled,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    Usage,
)

VERSION_KEY = "v"
SCHEMA_VERSION = 1
# Before events were typed, payloads carried no version.
UNVERSIONED = 0


class UnknownEventSchema(ValueError):
    """A stored payload of a schema version (or kind) this code cannot read."""


# ---- transcript messages inside payloads -------------------------------------------------


def message_fields(message: Message) -> dict[str, Any]:
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


def message_from_fields(data: Mapping[str, Any]) -> Message:
    """The transcript message stored inside an event's payload."""
    return Message(
        message_id=str(data["message_id"]),
        role=Role(data["role"]),
        content=str(data["content"]),
        sequence=int(data["sequence"]),
        create_time=datetime.fromisoformat(str(data["create_time"])),
        tool_calls=tuple(
            ToolCall(
                tool_call_id=str(call["tool_call_id"]),
                name=str(call["name"]),
                arguments_json=str(call["arguments_json"]),
            )
            for call in data.get("tool_calls") or ()
        ),
        tool_call_id=str(data.get("tool_call_id", "")),
        turn_id=str(data.get("turn_id", "")),
    )


# ---- encoding: one function per kind, always the current version ------------------------


def _encode_turn_started(body: TurnStarted) -> dict[str, Any]:
    return {"user_message": message_fields(body.user_message), "request_id": body.request_id}


def _encode_content_delta(body: ContentDelta) -> dict[str, Any]:
    return {"text": body.text}


def _encode_thinking_delta(body: ThinkingDelta) -> dict[str, Any]:
    return {"text": body.text}


def _encode_tool_call_started(body: ToolCallStarted) -> dict[str, Any]:
    return {
        "tool_call_id": body.tool_call_id,
        "name": body.name,
        "arguments_json": body.arguments_json,
    }


def _encode_tool_call_completed(body: ToolCallCompleted) -> dict[str, Any]:
    return {"tool_call_id": body.tool_call_id, "result": body.result, "is_error": body.is_error}


def _encode_usage(body: Usage) -> dict[str, Any]:
    return {
        "input_tokens": body.input_tokens,
        "output_tokens": body.output_tokens,
        "provider": body.provider,
        "model": body.model,
    }


def _encode_turn_completed(body: TurnCompleted) -> dict[str, Any]:
    return {"stop_reason": body.stop_reason, "message": message_fields(body.message)}


def _encode_turn_failed(body: TurnFailed) -> dict[str, Any]:
    return {"code": body.code, "message": body.message}


def _encode_turn_cancelled(body: TurnCancelled) -> dict[str, Any]:
    partial = body.partial_message
    return {
        "reason": body.reason,
        "partial_message": message_fields(partial) if partial is not None else None,
    }


def _encode_agent_started(body: AgentStarted) -> dict[str, Any]:
    return {
        "tool_call_id": body.tool_call_id,
        "agent": body.agent,
        "session_id": body.session_id,
        "child_turn_id": body.child_turn_id,
        "resumed": body.resumed,
    }


def _encode_agent_completed(body: AgentCompleted) -> dict[str, Any]:
    return {
        "tool_call_id": body.tool_call_id,
        "agent": body.agent,
        "session_id": body.session_id,
        "child_turn_id": body.child_turn_id,
        "outcome": body.outcome,
        "error_message": body.error_message,
    }


def _encode_approval_requested(body: ApprovalRequested) -> dict[str, Any]:
    return {
        "tool_call_id": body.tool_call_id,
        "name": body.name,
        "arguments_json": body.arguments_json,
        "expire_time": body.expire_time.isoformat() if body.expire_time else None,
    }


def _encode_approval_decided(body: ApprovalDecided) -> dict[str, Any]:
    return {"tool_call_id": body.tool_call_id, "approved": body.approved, "reason": body.reason}


def _encode_session_created(body: SessionCreated) -> dict[str, Any]:
    # The shape CreateSession's stored first responses already use, which session_from_json
    # reads back from older records too; kept under its own key so the event can grow.
    return {"session": session_to_json(body.session)}


def _encode_session_rewound(body: SessionRewound) -> dict[str, Any]:
    return {
        "to_message_id": body.to_message_id,
        "to_sequence": body.to_sequence,
        "removed_messages": body.removed_messages,
    }


# Each function takes the body type it is filed under.
_ENCODERS: Mapping[type[EventBody], Callable[[Any], dict[str, Any]]] = {
    TurnStarted: _encode_turn_started,
    ContentDelta: _encode_content_delta,
    ThinkingDelta: _encode_thinking_delta,
    ToolCallStarted: _encode_tool_call_started,
    ToolCallCompleted: _encode_tool_call_completed,
    Usage: _encode_usage,
    TurnCompleted: _encode_turn_completed,
    TurnFailed: _encode_turn_failed,
    TurnCancelled: _encode_turn_cancelled,
    AgentStarted: _encode_agent_started,
    AgentCompleted: _encode_agent_completed,
    ApprovalRequested: _encode_approval_requested,
    ApprovalDecided: _encode_approval_decided,
    SessionCreated: _encode_session_created,
    SessionRewound: _encode_session_rewound,
}


def encode(body: EventBody) -> dict[str, Any]:
    """The payload column's JSON for body, in the current schema version."""
    payload = _ENCODERS[type(body)](body)
    payload[VERSION_KEY] = SCHEMA_VERSION
    return payload


# ---- decoding: one function per kind and version ----------------------------------------
# Versions 0 and 1 store the same fields. Missing scalars read as the wire's defaults, as
# they did when payloads were handed to the wire as they were.


def _decode_turn_started(data: Mapping[str, Any]) -> TurnStarted:
    return TurnStarted(
        user_message=message_from_fields(data["user_message"]),
        request_id=str(data.get("request_id", "")),
    )


def _decode_content_delta(data: Mapping[str, Any]) -> ContentDelta:
    return ContentDelta(text=str(data.get("text", "")))


def _decode_thinking_delta(data: Mapping[str, Any]) -> ThinkingDelta:
    return ThinkingDelta(text=str(data.get("text", "")))


def _decode_tool_call_started(data: Mapping[str, Any]) -> ToolCallStarted:
    return ToolCallStarted(
        tool_call_id=str(data.get("tool_call_id", "")),
        name=str(data.get("name", "")),
        arguments_json=str(data.get("arguments_json", "")),
    )


def _decode_tool_call_completed(data: Mapping[str, Any]) -> ToolCallCompleted:
    return ToolCallCompleted(
        tool_call_id=str(data.get("tool_call_id", "")),
        result=str(data.get("result", "")),
        is_error=bool(data.get("is_error", False)),
    )


def _decode_usage(data: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(data.get("input_tokens", 0)),
        output_tokens=int(data.get("output_tokens", 0)),
        provider=str(data.get("provider", "")),
        model=str(data.get("model", "")),
    )


def _decode_turn_completed(data: Mapping[str, Any]) -> TurnCompleted:
    return TurnCompleted(
        stop_reason=str(data.get("stop_reason", "")),
        message=message_from_fields(data["message"]),
    )


def _decode_turn_failed(data: Mapping[str, Any]) -> TurnFailed:
    return TurnFailed(code=str(data.get("code", "")), message=str(data.get("message", "")))


def _decode_turn_cancelled(data: Mapping[str, Any]) -> TurnCancelled:
    partial = data.get("partial_message")
    return TurnCancelled(
        reason=str(data.get("reason", "")),
        partial_message=message_from_fields(partial) if partial else None,
    )


def _decode_agent_started(data: Mapping[str, Any]) -> AgentStarted:
    return AgentStarted(
        tool_call_id=str(data.get("tool_call_id", "")),
        agent=str(data.get("agent", "")),
        session_id=str(data.get("session_id", "")),
        child_turn_id=str(data.get("child_turn_id", "")),
        resumed=bool(data.get("resumed", False)),
    )


def _decode_agent_completed(data: Mapping[str, Any]) -> AgentCompleted:
    return AgentCompleted(
        tool_call_id=str(data.get("tool_call_id", "")),
        agent=str(data.get("agent", "")),
        session_id=str(data.get("session_id", "")),
        child_turn_id=str(data.get("child_turn_id", "")),
        outcome=str(data.get("outcome", "")),
        error_message=str(data.get("error_message", "")),
    )


def _decode_approval_requested(data: Mapping[str, Any]) -> ApprovalRequested:
    expire = data.get("expire_time")
    return ApprovalRequested(
        tool_call_id=str(data.get("tool_call_id", "")),
        name=str(data.get("name", "")),
        arguments_json=str(data.get("arguments_json", "")),
        expire_time=datetime.fromisoformat(str(expire)) if expire else None,
    )


def _decode_approval_decided(data: Mapping[str, Any]) -> ApprovalDecided:
    return ApprovalDecided(
        tool_call_id=str(data.get("tool_call_id", "")),
        approved=bool(data.get("approved", False)),
        reason=str(data.get("reason", "")),
    )


def _decode_session_created(data: Mapping[str, Any]) -> SessionCreated:
    return SessionCreated(session=session_from_json(data["session"]))


def _decode_session_rewound(data: Mapping[str, Any]) -> SessionRewound:
    return SessionRewound(
        to_message_id=str(data.get("to_message_id", "")),
        to_sequence=int(data.get("to_sequence", 0)),
        removed_messages=int(data.get("removed_messages", 0)),
    )


_Decoders = Mapping[EventKind, Callable[[Mapping[str, Any]], EventBody]]

_DECODERS_V1: _Decoders = {
    EventKind.TURN_STARTED: _decode_turn_started,
    EventKind.CONTENT_DELTA: _decode_content_delta,
    EventKind.THINKING_DELTA: _decode_thinking_delta,
    EventKind.TOOL_CALL_STARTED: _decode_tool_call_started,
    EventKind.TOOL_CALL_COMPLETED: _decode_tool_call_completed,
    EventKind.USAGE: _decode_usage,
    EventKind.TURN_COMPLETED: _decode_turn_completed,
    EventKind.TURN_FAILED: _decode_turn_failed,
    EventKind.TURN_CANCELLED: _decode_turn_cancelled,
    EventKind.AGENT_STARTED: _decode_agent_started,
    EventKind.AGENT_COMPLETED: _decode_agent_completed,
    EventKind.APPROVAL_REQUESTED: _decode_approval_requested,
    EventKind.APPROVAL_DECIDED: _decode_approval_decided,
    # New in version 1: no unversioned log holds one, but the table is shared.
    EventKind.SESSION_CREATED: _decode_session_created,
    EventKind.SESSION_REWOUND: _decode_session_rewound,
}

_DECODERS: Mapping[int, _Decoders] = {
    UNVERSIONED: _DECODERS_V1,  # the same fields, written before versions existed
    1: _DECODERS_V1,
}


def decode(kind: EventKind, payload: Mapping[str, Any]) -> EventBody:
    """The body stored as payload under kind, whichever schema version wrote it."""
    version = payload.get(VERSION_KEY, UNVERSIONED)
    decoders = _DECODERS.get(version) if isinstance(version, int) else None
    if decoders is None:
        raise UnknownEventSchema(f"event payload of unknown schema version {version!r}")
    return decoders[kind](payload)
