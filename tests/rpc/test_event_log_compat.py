"""Event logs written before events were typed still replay, on both databases.

The rows below are stored the way the code before typed events stored them: the payload
column held the fields of the kind's wire message, with no schema version. They are copied
from a log that code wrote, and inserted directly, the way it inserted them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import create_engine, insert, select, text, update

from session_service.storage.models import EventRow, MessageRow, SessionRow, TurnRow
from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import events_pb2, session_pb2, session_service_pb2
from shared.db.engine import sync_url
from tests.support.pair import Stack
from tests.support.rpc import detail

Event = events_pb2.SessionEvent

T0 = datetime(2026, 12, 1, 10, 43, 54, 66194, tzinfo=UTC)
TA, TB, TC, TD = (
    "cae8ba8602d64a038fb6b277dea9f5c0",
    "09ef6880312d4144824842984b6f5559",
    "459a1e91713644d083c5bee6b71dd4ab",
    "5b1f7c2e9d0a4e6f8c3b2a1d0e9f8a7b",
)


def _message(
    message_id: str, role: str, content: str, sequence: int, turn_id: str, **more: Any
) -> dict[str, Any]:
    """A transcript message as the old payloads embedded it."""
    return {
        "message_id": message_id,
        "role": role,
        "content": content,
        "tool_calls": more.get("tool_calls", []),
        "tool_call_id": more.get("tool_call_id", ""),
        "sequence": sequence,
        "create_time": (T0 + timedelta(milliseconds=sequence)).isoformat(),
        "turn_id": turn_id,
    }


CALL = {"tool_call_id": "call_0_0", "name": "read_file", "arguments_json": '{"path": "note.txt"}'}
MESSAGES = [
    _message("548099d0a9844906b477530b4a268bd0", "USER", "hi", 1, TA),
    _message("a2", "ASSISTANT", "Look. ", 2, TA, tool_calls=[CALL]),
    _message("a3", "TOOL", "remember", 3, TA, tool_call_id="call_0_0"),
    _message("6cac7f4c454043c3a0d756933386e2d8", "ASSISTANT", "Done.", 4, TA),
    _message("2cacee5c68fe47e4b86725d9a50cac42", "USER", "slow", 5, TB),
    _message("d15d4d72508c4d5b8b6c5c67ea97d20b", "ASSISTANT", "a ", 6, TB),
    _message("8e163ce0a62e409fb8e6de66cc677e24", "USER", "again", 7, TC),
    _message("b8", "USER", "stop", 8, TD),
]

# (turn, kind, payload as stored): four turns that completed (with a tool call), were
# cancelled with a partial reply, were failed as abandoned, and were cancelled before any
# text. Sequences follow the order, from 1.
OLD_LOG: list[tuple[str, str, dict[str, Any]]] = [
    (TA, "turn_started", {"user_message": MESSAGES[0], "request_id": "req-legacy"}),
    (TA, "thinking_delta", {"text": "hmm"}),
    (TA, "content_delta", {"text": "Look. "}),
    (
        TA,
        "usage",
        {"input_tokens": 6, "output_tokens": 2, "provider": "provider-echo", "model": "echo"},
    ),
    (TA, "tool_call_started", dict(CALL)),
    (
        TA,
        "tool_call_completed",
        {"tool_call_id": "call_0_0", "result": "remember", "is_error": False},
    ),
    (TA, "content_delta", {"text": "Done."}),
    (
        TA,
        "usage",
        {"input_tokens": 8, "output_tokens": 1, "provider": "provider-echo", "model": "echo"},
    ),
    (TA, "turn_completed", {"stop_reason": "end_turn", "message": MESSAGES[3]}),
    (TB, "turn_started", {"user_message": MESSAGES[4], "request_id": ""}),
    (TB, "content_delta", {"text": "a "}),
    (TB, "turn_cancelled", {"reason": "cancelled", "partial_message": MESSAGES[5]}),
    (TC, "turn_started", {"user_message": MESSAGES[6], "request_id": ""}),
    (
        TC,
        "turn_failed",
        {
            "code": "TURN_ABANDONED",
            "message": "The replica running this turn stopped before it ended.",
        },
    ),
    (TD, "turn_started", {"user_message": MESSAGES[7], "request_id": ""}),
    (TD, "turn_cancelled", {"reason": "cancelled", "partial_message": None}),
]
# The exact text the old code stored for one of them (SQLite keeps JSON as written).
OLD_TEXT = (
    '{"user_message": {"message_id": "548099d0a9844906b477530b4a268bd0", "role": "USER", '
    '"content": "hi", "tool_calls": [], "tool_call_id": "", "sequence": 1, '
    '"create_time": "2026-12-01T10:43:54.067194+00:00", '
    '"turn_id": "cae8ba8602d64a038fb6b277dea9f5c0"}, "request_id": "req-legacy"}'
)
TURNS = [  # (turn, status, request_id, first, last)
    (TA, "COMPLETED", "req-legacy", 1, 9),
    (TB, "CANCELLED", None, 10, 12),
    (TC, "FAILED", None, 13, 14),
    (TD, "CANCELLED", None, 15, 16),
]


def _event_time(sequence: int) -> datetime:
    return T0 + timedelta(seconds=sequence)


def _stamp(value: datetime) -> Any:
    wire = Event()
    wire.event_time.FromDatetime(value)
    return wire.event_time


_ROLES = {
    "USER": session_pb2.ROLE_USER,
    "ASSISTANT": session_pb2.ROLE_ASSISTANT,
    "TOOL": session_pb2.ROLE_TOOL,
}


def _message_pb(data: dict[str, Any]) -> session_pb2.Message:
    return session_pb2.Message(
        message_id=data["message_id"],
        role=_ROLES[data["role"]],
        content=data["content"],
        tool_calls=[session_pb2.ToolCall(**c) for c in data["tool_calls"]],
        tool_call_id=data["tool_call_id"],
        sequence=data["sequence"],
        create_time=_stamp(datetime.fromisoformat(data["create_time"])),
        turn_id=data["turn_id"],
    )


def expected_wire() -> list[Event]:
    """What StreamEvents must send for OLD_LOG, written out field by field."""
    bodies: list[dict[str, Any]] = [
        {
            "turn_started": events_pb2.TurnStarted(
                user_message=_message_pb(MESSAGES[0]), request_id="req-legacy"
            )
        },
        {"thinking_delta": events_pb2.ThinkingDelta(text="hmm")},
        {"content_delta": events_pb2.ContentDelta(text="Look. ")},
        {
            "usage": events_pb2.Usage(
                input_tokens=6, output_tokens=2, provider="provider-echo", model="echo"
            )
        },
        {"tool_call_started": events_pb2.ToolCallStarted(**CALL)},
        {
            "tool_call_completed": events_pb2.ToolCallCompleted(
                tool_call_id="call_0_0", result="remember", is_error=False
            )
        },
        {"content_delta": events_pb2.ContentDelta(text="Done.")},
        {
            "usage": events_pb2.Usage(
                input_tokens=8, output_tokens=1, provider="provider-echo", model="echo"
            )
        },
        {
            "turn_completed": events_pb2.TurnCompleted(
                stop_reason="end_turn", message=_message_pb(MESSAGES[3])
            )
        },
        {"turn_started": events_pb2.TurnStarted(user_message=_message_pb(MESSAGES[4]))},
        {"content_delta": events_pb2.ContentDelta(text="a ")},
        {
            "turn_cancelled": events_pb2.TurnCancelled(
                reason="cancelled", partial_message=_message_pb(MESSAGES[5])
            )
        },
        {"turn_started": events_pb2.TurnStarted(user_message=_message_pb(MESSAGES[6]))},
        {
            "turn_failed": events_pb2.TurnFailed(
                code="TURN_ABANDONED",
                message="The replica running this turn stopped before it ended.",
            )
        },
        {"turn_started": events_pb2.TurnStarted(user_message=_message_pb(MESSAGES[7]))},
        {"turn_cancelled": events_pb2.TurnCancelled(reason="cancelled")},
    ]
    return [
        Event(
            sequence=sequence,
            turn_id=turn_id,
            event_time=_stamp(_event_time(sequence)),
            **body,
        )
        for sequence, ((turn_id, _, _), body) in enumerate(zip(OLD_LOG, bodies, strict=True), 1)
    ]


def write_old_log(database_url: str, session_id: str) -> None:
    """Stores OLD_LOG, its transcript and its turns under the session, as the old code did."""
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            tenant_id = conn.execute(
                select(SessionRow.tenant_id).where(SessionRow.session_id == session_id)
            ).scalar_one()
            key = {"tenant_id": tenant_id, "session_id": session_id}
            conn.execute(
                insert(MessageRow),
                [
                    {
                        **key,
                        "sequence": m["sequence"],
                        "message_id": m["message_id"],
                        "role": m["role"],
                        "content": m["content"],
                        "tool_calls": m["tool_calls"],
                        "tool_call_id": m["tool_call_id"],
                        "turn_id": m["turn_id"],
                        "create_time": datetime.fromisoformat(m["create_time"]),
                    }
                    for m in MESSAGES
                ],
            )
            conn.execute(
                insert(TurnRow),
                [
                    {
                        **key,
                        "turn_id": turn_id,
                        "request_id": request_id,
                        "status": status,
                        "first_sequence": first,
                        "last_sequence": last,
                        "cancel_requested": status == "CANCELLED",
                        "runner": "",
                        "lease_expires": _event_time(last),
                        "create_time": _event_time(first),
                        "end_time": _event_time(last),
                    }
                    for turn_id, status, request_id, first, last in TURNS
                ],
            )
            conn.execute(
                insert(EventRow),
                [
                    {
                        **key,
                        "sequence": sequence,
                        "turn_id": turn_id,
                        "kind": kind,
                        "payload": payload,
                        "event_time": _event_time(sequence),
                    }
                    for sequence, (turn_id, kind, payload) in enumerate(OLD_LOG, 1)
                ],
            )
            conn.execute(
                update(SessionRow)
                .where(SessionRow.session_id == session_id)
                .values(
                    last_sequence=len(OLD_LOG),
                    message_count=len(MESSAGES),
                    version=SessionRow.version + 1,
                )
            )
            stored = conn.execute(
                text(
                    "SELECT payload FROM session_events "
                    "WHERE session_id = :session_id AND sequence = 1"
                ),
                {"session_id": session_id},
            ).scalar_one()
            # The row really is in the old shape, with no schema version.
            found = stored if isinstance(stored, dict) else json.loads(stored)
            assert found == json.loads(OLD_TEXT)
            if engine.dialect.name == "sqlite":
                assert stored == OLD_TEXT
    finally:
        engine.dispose()


async def collect(call: Any) -> list[Event]:
    """The events of a streaming call, to its end."""

    async def drain() -> list[Event]:
        events: list[Event] = []
        while True:
            event = await call.read()
            if not isinstance(event, Event):
                return events
            events.append(event)

    return await asyncio.wait_for(drain(), 20)


async def started_session(stack: Stack) -> str:
    document = {
        "bundle": {"name": "compat"},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [{"module": "provider-echo", "config": {"reply": "new and typed"}}],
    }
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="compat",
            config=config_pb2.Config(
                name="compat", yaml_content=f"---\n{json.dumps(document)}\n---\nBe brief.\n"
            ),
        )
    )
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="compat", start=True)
    )
    return str(session.session_id)


def stream(stack: Stack, session_id: str, after: int = 0) -> Any:
    return stack.sessions.StreamEvents(
        session_service_pb2.StreamEventsRequest(session_id=session_id, after_sequence=after)
    )


def send(stack: Stack, session_id: str, content: str, request_id: str = "") -> Any:
    return stack.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(
            session_id=session_id, content=content, request_id=request_id
        )
    )


def wire_bytes(events: Sequence[Event]) -> list[bytes]:
    return [e.SerializeToString(deterministic=True) for e in events]


async def test_a_log_written_before_typed_events_replays_through_stream_events(
    stack: Stack, database_url: str
) -> None:
    session_id = await started_session(stack)
    write_old_log(database_url, session_id)
    expected = expected_wire()

    replayed = await collect(stream(stack, session_id))
    assert replayed == expected
    assert await collect(stream(stack, session_id, after=9)) == expected[9:]

    # A retry of the old turn's request re-attaches to its stored events, read back from the
    # old TurnStarted; the same request_id with another message is still refused.
    assert await collect(send(stack, session_id, "hi", request_id="req-legacy")) == expected[:9]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await collect(send(stack, session_id, "not hi", request_id="req-legacy"))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info = detail(refused.value, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["turn_id"]) == ("REQUEST_ID_REUSED", TA)

    # A new turn goes on after the old log, and the whole log replays: old rows, new rows.
    live = await collect(send(stack, session_id, "and now?"))
    assert live[0].sequence == len(OLD_LOG) + 1
    assert live[-1].WhichOneof("event") == "turn_completed"
    assert live[-1].turn_completed.message.sequence == len(MESSAGES) + 2
    everything = await collect(stream(stack, session_id))
    assert wire_bytes(everything) == wire_bytes([*expected, *live])
