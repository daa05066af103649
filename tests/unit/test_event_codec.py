"""Typed events: how each kind is stored (and read back from older logs), and sent on the wire."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from typing import Any

import pytest

from session_service.servicer import EVENT_BODY_PB, event_pb
from session_service.sessions.model import Message, Role, ToolCall
from session_service.storage.event_codec import (
    SCHEMA_VERSION,
    VERSION_KEY,
    UnknownEventSchema,
    decode,
    encode,
)
from session_service.turns.model import (
    TERMINAL_KINDS,
    ContentDelta,
    Event,
    EventBody,
    EventKind,
    ThinkingDelta,
    ToolCallCompleted,
    ToolCallStarted,
    TurnCancelled,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    Usage,
    storable_body,
)
from shared._generated.tandem.session.v1 import events_pb2, session_pb2

NOW = datetime(2026, 12, 1, 10, 43, 54, 66194, tzinfo=UTC)
TURN = "cae8ba8602d64a038fb6b277dea9f5c0"

USER = Message("548099d0a9844906b477530b4a268bd0", Role.USER, "hi", 1, NOW, turn_id=TURN)
ASKING = Message(
    "6cac7f4c454043c3a0d756933386e2d8",
    Role.ASSISTANT,
    "Look. ",
    2,
    NOW,
    tool_calls=(ToolCall("call_0_0", "read_file", '{"path": "note.txt"}'),),
    turn_id=TURN,
)

# One body of every kind, with every field set to something other than its default.
BODIES: list[EventBody] = [
    TurnStarted(USER, "req-1"),
    ContentDelta("Look. "),
    ThinkingDelta("hmm"),
    ToolCallStarted("call_0_0", "read_file", '{"path": "note.txt"}'),
    ToolCallCompleted("call_0_0", "remember", True),
    Usage(6, 2, "provider-echo", "echo"),
    TurnCompleted("end_turn", ASKING),
    TurnFailed("PROVIDER_UNAVAILABLE", "down"),
    TurnCancelled("cancelled", USER),
    TurnCancelled("cancelled", None),
]


def _user_fields() -> dict[str, Any]:
    return {
        "message_id": "548099d0a9844906b477530b4a268bd0",
        "role": "USER",
        "content": "hi",
        "tool_calls": [],
        "tool_call_id": "",
        "sequence": 1,
        "create_time": "2026-12-01T10:43:54.066194+00:00",
        "turn_id": TURN,
    }


# Payloads exactly as the code before typed events stored them (kind, payload column as
# JSON text), copied from a log it wrote; they carry no schema version.
LEGACY: list[tuple[str, str, EventBody]] = [
    (
        "turn_started",
        '{"user_message": {"message_id": "548099d0a9844906b477530b4a268bd0", "role": "USER", '
        '"content": "hi", "tool_calls": [], "tool_call_id": "", "sequence": 1, '
        '"create_time": "2026-12-01T10:43:54.066194+00:00", '
        '"turn_id": "cae8ba8602d64a038fb6b277dea9f5c0"}, "request_id": "req-1"}',
        TurnStarted(USER, "req-1"),
    ),
    ("thinking_delta", '{"text": "hmm"}', ThinkingDelta("hmm")),
    ("content_delta", '{"text": "Look. "}', ContentDelta("Look. ")),
    (
        "usage",
        '{"input_tokens": 6, "output_tokens": 2, "provider": "provider-echo", "model": "echo"}',
        Usage(6, 2, "provider-echo", "echo"),
    ),
    (
        "tool_call_started",
        '{"tool_call_id": "call_0_0", "name": "read_file", '
        '"arguments_json": "{\\"path\\": \\"note.txt\\"}"}',
        ToolCallStarted("call_0_0", "read_file", '{"path": "note.txt"}'),
    ),
    (
        "tool_call_completed",
        '{"tool_call_id": "call_0_0", "result": "remember", "is_error": false}',
        ToolCallCompleted("call_0_0", "remember", False),
    ),
    (
        "turn_completed",
        '{"stop_reason": "end_turn", "message": {"message_id": '
        '"6cac7f4c454043c3a0d756933386e2d8", "role": "ASSISTANT", "content": "Look. ", '
        '"tool_calls": [{"tool_call_id": "call_0_0", "name": "read_file", '
        '"arguments_json": "{\\"path\\": \\"note.txt\\"}"}], "tool_call_id": "", '
        '"sequence": 2, "create_time": "2026-12-01T10:43:54.066194+00:00", '
        '"turn_id": "cae8ba8602d64a038fb6b277dea9f5c0"}}',
        TurnCompleted("end_turn", ASKING),
    ),
    (
        "turn_failed",
        '{"code": "TURN_ABANDONED", '
        '"message": "The replica running this turn stopped before it ended."}',
        TurnFailed("TURN_ABANDONED", "The replica running this turn stopped before it ended."),
    ),
    (
        "turn_cancelled",
        '{"reason": "cancelled", "partial_message": {"message_id": '
        '"548099d0a9844906b477530b4a268bd0", "role": "USER", "content": "hi", '
        '"tool_calls": [], "tool_call_id": "", "sequence": 1, '
        '"create_time": "2026-12-01T10:43:54.066194+00:00", '
        '"turn_id": "cae8ba8602d64a038fb6b277dea9f5c0"}}',
        TurnCancelled("cancelled", USER),
    ),
    (
        "turn_cancelled",
        '{"reason": "cancelled", "partial_message": null}',
        TurnCancelled("cancelled", None),
    ),
]


def test_the_union_names_every_kind_once() -> None:
    members = typing.get_args(EventBody)
    assert sorted(m.kind.value for m in members) == sorted(k.value for k in EventKind)
    assert {m for m in members if m.kind in TERMINAL_KINDS} == {
        TurnCompleted,
        TurnFailed,
        TurnCancelled,
    }
    assert set(EVENT_BODY_PB) == set(members)


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_every_kind_reads_back_as_it_was_written(body: EventBody) -> None:
    payload = encode(body)
    assert payload[VERSION_KEY] == SCHEMA_VERSION == 1
    # What the database hands back is JSON.
    assert decode(body.kind, json.loads(json.dumps(payload))) == body


def test_the_stored_shape_is_pinned() -> None:
    assert encode(TurnStarted(USER, "req-1")) == {
        "user_message": _user_fields(),
        "request_id": "req-1",
        "v": 1,
    }
    assert encode(ContentDelta("a")) == {"text": "a", "v": 1}
    assert encode(Usage(1, 2, "p", "m")) == {
        "input_tokens": 1,
        "output_tokens": 2,
        "provider": "p",
        "model": "m",
        "v": 1,
    }
    assert encode(TurnCancelled("cancelled", None)) == {
        "reason": "cancelled",
        "partial_message": None,
        "v": 1,
    }


@pytest.mark.parametrize(("kind", "stored", "body"), LEGACY, ids=[k for k, _, _ in LEGACY])
def test_payloads_written_before_versions_still_decode(
    kind: str, stored: str, body: EventBody
) -> None:
    payload = json.loads(stored)
    assert VERSION_KEY not in payload
    assert decode(EventKind(kind), payload) == body
    # The current version writes the same fields, plus its version.
    assert encode(body) == {**payload, VERSION_KEY: SCHEMA_VERSION}


def test_an_unknown_schema_version_is_refused() -> None:
    with pytest.raises(UnknownEventSchema):
        decode(EventKind.CONTENT_DELTA, {"text": "a", VERSION_KEY: 99})
    with pytest.raises(UnknownEventSchema):
        decode(EventKind.CONTENT_DELTA, {"text": "a", VERSION_KEY: "1"})


def test_storable_body_replaces_nul_in_text_and_in_the_message_it_carries() -> None:
    clean = ContentDelta("fine")
    assert storable_body(clean) is clean
    assert storable_body(ContentDelta("a\x00b")) == ContentDelta("a\ufffdb")
    started = storable_body(TurnStarted(Message("m", Role.USER, "x\x00y", 1, NOW), "r\x00"))
    assert (started.user_message.content, started.request_id) == ("x\ufffdy", "r\ufffd")
    cancelled = storable_body(
        TurnCancelled("cancelled", Message("m", Role.ASSISTANT, "\x00", 2, NOW))
    )
    assert cancelled.partial_message is not None
    assert cancelled.partial_message.content == "\ufffd"
    assert storable_body(TurnCancelled("cancelled", None)) == TurnCancelled("cancelled", None)
    assert storable_body(ToolCallCompleted("c", "\x00", False)).result == "\ufffd"


def _user_pb() -> session_pb2.Message:
    return session_pb2.Message(
        message_id=USER.message_id,
        role=session_pb2.ROLE_USER,
        content="hi",
        sequence=1,
        create_time=event_pb(Event(1, TURN, ContentDelta(""), NOW)).event_time,
        turn_id=TURN,
    )


def test_each_kind_maps_to_its_wire_message() -> None:
    wires = [event_pb(Event(i, TURN, body, NOW)) for i, body in enumerate(BODIES, 1)]
    assert [w.WhichOneof("event") for w in wires] == [b.kind.value for b in BODIES]
    assert [(w.sequence, w.turn_id) for w in wires] == [
        (i, TURN) for i in range(1, len(BODIES) + 1)
    ]
    assert wires[0].event_time.ToDatetime(tzinfo=UTC) == NOW
    assert wires[0].turn_started == events_pb2.TurnStarted(
        user_message=_user_pb(), request_id="req-1"
    )
    assert wires[1].content_delta == events_pb2.ContentDelta(text="Look. ")
    assert wires[2].thinking_delta == events_pb2.ThinkingDelta(text="hmm")
    assert wires[3].tool_call_started == events_pb2.ToolCallStarted(
        tool_call_id="call_0_0", name="read_file", arguments_json='{"path": "note.txt"}'
    )
    assert wires[4].tool_call_completed == events_pb2.ToolCallCompleted(
        tool_call_id="call_0_0", result="remember", is_error=True
    )
    assert wires[5].usage == events_pb2.Usage(
        input_tokens=6, output_tokens=2, provider="provider-echo", model="echo"
    )
    completed = wires[6].turn_completed
    assert completed.stop_reason == "end_turn"
    assert (completed.message.content, completed.message.role) == (
        "Look. ",
        session_pb2.ROLE_ASSISTANT,
    )
    assert [(c.tool_call_id, c.name, c.arguments_json) for c in completed.message.tool_calls] == [
        ("call_0_0", "read_file", '{"path": "note.txt"}')
    ]
    assert wires[7].turn_failed == events_pb2.TurnFailed(
        code="PROVIDER_UNAVAILABLE", message="down"
    )
    assert not wires[7].turn_failed.HasField("status")
    assert wires[8].turn_cancelled == events_pb2.TurnCancelled(
        reason="cancelled", partial_message=_user_pb()
    )
    assert wires[9].turn_cancelled == events_pb2.TurnCancelled(reason="cancelled")
    assert not wires[9].turn_cancelled.HasField("partial_message")


def test_an_empty_body_still_selects_its_kind_on_the_wire() -> None:
    wire = event_pb(Event(1, TURN, ContentDelta(""), NOW))
    assert wire.WhichOneof("event") == "content_delta"
