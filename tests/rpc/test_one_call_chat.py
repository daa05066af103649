"""One-call chat through real stubs: SendMessage with config_id makes, starts and runs a session.

The stream starts with SessionCreated (the session's first logged event, sequence 1), then the
turn; the session continues like any other, and a retry with the same request_id makes no
second session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2

from session_service.servicer import event_pb
from session_service.sessions.model import Session, Status
from session_service.storage.event_codec import decode, encode
from session_service.turns.model import Event as DomainEvent
from session_service.turns.model import EventKind, SessionCreated
from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tandem_client import AsyncTandem, text_of
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rpc_error
from tests.support.secured import auth, secured_stack
from tests.support.turns import (
    Event,
    assert_gap_free,
    bundle,
    collect,
    get_session,
    kinds,
    send,
    transcript,
)
from tests.support.turns import (
    text_of as wire_text_of,
)

REPLY = "Made on the fly and answered."


async def store_config(stack: Any, name: str = "chat", reply: str = REPLY, **call: Any) -> None:
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=name,
            config=config_pb2.Config(name=name, yaml_content=bundle({"reply": reply})),
        ),
        **call,
    )


def send_new(stack: Any, content: str, config_id: str = "chat", **fields: Any) -> Any:
    """SendMessage with config_id: the streaming call."""
    metadata = fields.pop("metadata", None)
    return stack.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(config_id=config_id, content=content, **fields),
        metadata=metadata,
    )


async def session_ids(stack: Stack) -> list[str]:
    listed = await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
    return [s.session_id for s in listed.sessions]


async def replay(stack: Stack, session_id: str) -> list[Event]:
    return await collect(
        stack.sessions.StreamEvents(
            session_service_pb2.StreamEventsRequest(session_id=session_id, after_sequence=0)
        )
    )


async def test_one_call_makes_a_session_streams_session_created_then_the_turn(
    stack: Stack,
) -> None:
    await store_config(stack)
    events = await collect(send_new(stack, "hello"))
    assert kinds(events)[0] == "session_created"
    assert kinds(events)[1] == "turn_started"
    assert kinds(events)[-1] == "turn_completed"
    assert_gap_free(events)
    created = events[0]
    assert (created.sequence, created.turn_id) == (1, "")
    new = created.session_created.session
    assert new.session_id
    assert (new.config_id, new.config_revision, new.status) == (
        "chat",
        1,
        session_pb2.SESSION_STATUS_ACTIVE,
    )
    assert new.last_sequence == 1
    assert {e.turn_id for e in events[1:]} == {events[1].turn_id}
    assert wire_text_of(events) == REPLY

    session = await get_session(stack, new.session_id)
    assert session.status == session_pb2.SESSION_STATUS_ACTIVE
    assert (session.message_count, session.last_sequence) == (2, events[-1].sequence)
    assert session.active_turn_id == ""
    assert [(m.role, m.content) for m in await transcript(stack, new.session_id)] == [
        (session_pb2.ROLE_USER, "hello"),
        (session_pb2.ROLE_ASSISTANT, REPLY),
    ]

    # It continues like any session.
    more = await collect(send(stack.sessions, new.session_id, "again"))
    assert kinds(more)[0] == "turn_started"
    assert more[0].sequence == events[-1].sequence + 1
    assert kinds(more)[-1] == "turn_completed"
    assert len(await transcript(stack, new.session_id)) == 4

    # The log from 0 is both streams, SessionCreated first, without a gap.
    logged = await replay(stack, new.session_id)
    assert_gap_free(logged)
    assert [(e.sequence, e.turn_id) for e in logged] == [
        (e.sequence, e.turn_id) for e in [*events, *more]
    ]
    assert kinds(logged) == kinds(events) + kinds(more)
    assert logged[0].session_created == created.session_created
    # Resuming after the first event still yields everything after it.
    resumed = await collect(
        stack.sessions.StreamEvents(
            session_service_pb2.StreamEventsRequest(session_id=new.session_id, after_sequence=1)
        )
    )
    assert [e.sequence for e in resumed] == [e.sequence for e in logged[1:]]


async def test_config_revision_pins_the_new_session(stack: Stack) -> None:
    await store_config(stack, reply="first")
    await stack.configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id="chat", yaml_content=bundle({"reply": "second"}))
        )
    )
    pinned = await collect(send_new(stack, "hi", config_revision=1))
    latest = await collect(send_new(stack, "hi"))
    assert pinned[0].session_created.session.config_revision == 1
    assert wire_text_of(pinned) == "first"
    assert latest[0].session_created.session.config_revision == 2
    assert wire_text_of(latest) == "second"


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]


async def test_exactly_one_of_session_id_and_config_id(stack: Stack) -> None:
    await store_config(stack)
    events = await collect(send_new(stack, "hello"))
    session_id = events[0].session_created.session.session_id

    both = await rpc_error(collect(send_new(stack, "hi", session_id=session_id)))
    assert both.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(both) == ["config_id"]

    neither = await rpc_error(
        collect(stack.sessions.SendMessage(session_service_pb2.SendMessageRequest(content="hi")))
    )
    assert neither.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(neither).reason == "FIELD_REQUIRED"
    assert fields_of(neither) == ["session_id", "config_id"]

    revision_only = await rpc_error(
        collect(
            stack.sessions.SendMessage(
                session_service_pb2.SendMessageRequest(
                    session_id=session_id, content="hi", config_revision=1
                )
            )
        )
    )
    assert revision_only.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(revision_only) == ["config_revision"]

    # An empty message is refused before any session is made.
    empty = await rpc_error(collect(send_new(stack, "  ")))
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(empty) == ["content"]
    assert await session_ids(stack) == [session_id]
    assert len(await transcript(stack, session_id)) == 2


async def test_an_unknown_config_is_not_found_and_makes_no_session(stack: Stack) -> None:
    error = await rpc_error(collect(send_new(stack, "hello", config_id="missing")))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(error).reason == "CONFIG_NOT_FOUND"
    assert await session_ids(stack) == []


async def test_a_retry_with_the_same_request_id_makes_no_second_session(stack: Stack) -> None:
    await store_config(stack)
    first = await collect(send_new(stack, "hello", request_id="one-call-1"))
    again = await collect(send_new(stack, "hello", request_id="one-call-1"))
    session_id = first[0].session_created.session.session_id
    assert again[0].session_created.session.session_id == session_id
    assert [(e.sequence, e.turn_id, e.WhichOneof("event")) for e in again] == [
        (e.sequence, e.turn_id, e.WhichOneof("event")) for e in first
    ]
    assert wire_text_of(again) == REPLY
    assert await session_ids(stack) == [session_id]
    assert len(await transcript(stack, session_id)) == 2

    # The same id with another message is a client bug, refused, and still makes nothing.
    reused = await rpc_error(collect(send_new(stack, "other", request_id="one-call-1")))
    assert reused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(reused).reason == "REQUEST_ID_REUSED"
    # CreateSession's request_ids are its own: the same id there makes its own session.
    made = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="chat", request_id="one-call-1")
    )
    assert made.session_id != session_id
    assert sorted(await session_ids(stack)) == sorted([session_id, made.session_id])


async def test_the_session_quota_holds_for_one_call_chat(database_url: str, tmp_path: Path) -> None:
    tenants = {"tenant-a": {"quotas": {"sessions": 1}}}
    async with secured_stack(database_url, tmp_path, tenants=tenants) as stack:
        await store_config(stack, metadata=auth("a-writer"))
        events = await collect(send_new(stack, "hello", metadata=auth("a-writer")))
        assert kinds(events)[0] == "session_created"
        refused = await rpc_error(collect(send_new(stack, "hello", metadata=auth("a-writer"))))
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(refused).metadata["quota"] == "sessions"
        listed = await stack.sessions.ListSessions(
            session_service_pb2.ListSessionsRequest(), metadata=auth("a-writer")
        )
        assert [s.session_id for s in listed.sessions] == [
            events[0].session_created.session.session_id
        ]


@contextlib.asynccontextmanager
async def client_of(stack: Stack) -> AsyncIterator[AsyncTandem]:
    async with AsyncTandem(
        stack.config_app.server.address, session_target=stack.session_app.server.address
    ) as client:
        yield client


async def test_the_python_client_chats_over_a_new_session(stack: Stack) -> None:
    async with client_of(stack) as client:
        config = await client.configs.create("chat", bundle({"reply": "hi there"}))
        events = [e async for e in client.sessions.chat_new(config.config_id, "Hello")]
        assert events[0].kind == "session_created"
        assert not events[0].terminal
        session = events[0].session
        assert session is not None
        assert (session.config_id, session.status) == (config.config_id, "ACTIVE")
        assert [e.kind for e in events[1:2]] == ["turn_started"]
        assert events[-1].kind == "turn_completed"
        assert text_of(events) == "hi there"

        result = await client.sessions.reply(session.session_id, "Again")
        assert (result.text, result.outcome) == ("hi there", "COMPLETED")
        replayed = [e async for e in client.sessions.stream(session.session_id)]
        assert [e.sequence for e in replayed] == list(range(1, len(replayed) + 1))
        assert replayed[0].kind == "session_created"
        assert replayed[0].session == session
        assert (await client.sessions.get(session.session_id)).message_count == 4


def test_session_created_is_stored_and_sent_whole() -> None:
    now = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    session = Session(
        "s1", "chat", 3, Status.ACTIVE, now, now, 1, tags={"team": "core"}, last_sequence=1
    )
    body = SessionCreated(session)
    assert body.kind is EventKind.SESSION_CREATED
    assert decode(EventKind.SESSION_CREATED, encode(body)) == body
    wire = event_pb(DomainEvent(1, "", body, now))
    assert wire.WhichOneof("event") == "session_created"
    sent = wire.session_created.session
    assert (sent.session_id, sent.config_id, sent.config_revision, dict(sent.tags)) == (
        "s1",
        "chat",
        3,
        {"team": "core"},
    )
    assert sent.status == session_pb2.SESSION_STATUS_ACTIVE
