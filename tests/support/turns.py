"""Turns through real stubs: test bundles, sending messages and reading their event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import (
    events_pb2,
    session_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from tests.support.pair import Stack

if TYPE_CHECKING:
    SessionStub = session_service_pb2_grpc.SessionServiceAsyncStub


Event = events_pb2.SessionEvent


def bundle(
    provider: dict[str, Any],
    *,
    tools: Sequence[dict[str, Any]] = (),
    orchestrator: Any = "loop-streaming",
    session: dict[str, Any] | None = None,
) -> str:
    """A bundle document (JSON is YAML) with an instruction."""
    document: dict[str, Any] = {
        "bundle": {"name": "turns"},
        "session": {"orchestrator": orchestrator, "context": "context-simple", **(session or {})},
        "providers": [{"module": "provider-echo", "config": provider}],
    }
    if tools:
        document["tools"] = list(tools)
    return f"---\n{json.dumps(document, indent=2)}\n---\nYou are a test assistant.\n"


async def active_session(stack: Stack, document: str, name: str = "turns") -> str:
    """Stores document as the config name, and starts a session on it; the session's id."""
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=name, config=config_pb2.Config(name=name, yaml_content=document)
        )
    )
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=name, start=True)
    )
    return str(session.session_id)


async def collect(call: Any, within: float = 20) -> list[Event]:
    """The rest of a streaming call's events (read() works before and after earlier reads)."""

    async def drain() -> list[Event]:
        events: list[Event] = []
        while True:
            event = await call.read()
            if not isinstance(event, Event):  # the end of the stream
                return events
            events.append(event)

    return await asyncio.wait_for(drain(), within)


async def next_event(call: Any) -> Event:
    """The next event of a streaming call, which must not have ended."""
    event = await asyncio.wait_for(call.read(), 10)
    assert isinstance(event, Event), "the stream ended early"
    return event


def send(stub: SessionStub, session_id: str, content: str, request_id: str = "") -> Any:
    """SendMessage: the streaming call of the turn it starts."""
    return stub.SendMessage(
        session_service_pb2.SendMessageRequest(
            session_id=session_id, content=content, request_id=request_id
        )
    )


def kinds(events: Sequence[Event]) -> list[str]:
    """Each event's kind (the name of its oneof field)."""
    return [str(e.WhichOneof("event")) for e in events]


def text_of(events: Sequence[Event]) -> str:
    """The streamed reply: the content deltas joined."""
    return "".join(e.content_delta.text for e in events if e.HasField("content_delta"))


def assert_gap_free(events: Sequence[Event]) -> None:
    """The events' sequence numbers follow each other without a gap."""
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))


async def transcript(stack: Stack, session_id: str) -> list[session_pb2.Message]:
    """The session's stored messages (up to 100)."""
    page = await stack.sessions.ListMessages(
        session_service_pb2.ListMessagesRequest(session_id=session_id, page_size=100)
    )
    return list(page.messages)


async def get_session(stack: Stack, session_id: str) -> session_pb2.Session:
    """GetSession."""
    return await stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session_id)
    )
