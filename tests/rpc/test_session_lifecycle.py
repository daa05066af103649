"""Sessions through real stubs: create, list, lifecycle, transcript, idempotency, deletion."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tests.support.configs import create_config
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rpc_error

S = session_pb2


async def new_session(stack: Stack, **kwargs: object) -> session_pb2.Session:
    return await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app", **kwargs)  # type: ignore[arg-type]
    )


@pytest.fixture
async def app_stack(stack: Stack) -> Stack:
    await create_config(stack, "app", "bundle:\n  name: app\n")
    return stack


async def move(stack: Stack, rpc: str, session_id: str, **kwargs: object) -> session_pb2.Session:
    request_type = getattr(session_service_pb2, f"{rpc}Request")
    return await getattr(stack.sessions, rpc)(request_type(session_id=session_id, **kwargs))  # type: ignore[no-any-return]


LEGAL = [
    ([], "StartSession", S.SESSION_STATUS_ACTIVE),
    (["StartSession"], "CompleteSession", S.SESSION_STATUS_COMPLETED),
    ([], "FailSession", S.SESSION_STATUS_FAILED),
    (["StartSession"], "FailSession", S.SESSION_STATUS_FAILED),
    ([], "TerminateSession", S.SESSION_STATUS_TERMINATED),
    (["StartSession"], "TerminateSession", S.SESSION_STATUS_TERMINATED),
    (["StartSession", "CompleteSession"], "ResumeSession", S.SESSION_STATUS_ACTIVE),
    (["TerminateSession"], "ResumeSession", S.SESSION_STATUS_ACTIVE),
]

ILLEGAL = [
    ([], "CompleteSession"),
    ([], "ResumeSession"),
    (["StartSession"], "StartSession"),
    (["StartSession"], "ResumeSession"),
    (["StartSession", "CompleteSession"], "StartSession"),
    (["StartSession", "CompleteSession"], "CompleteSession"),
    (["StartSession", "CompleteSession"], "FailSession"),
    (["StartSession", "CompleteSession"], "TerminateSession"),
    (["FailSession"], "StartSession"),
    (["FailSession"], "ResumeSession"),
    (["FailSession"], "CompleteSession"),
    (["FailSession"], "TerminateSession"),
    (["TerminateSession"], "StartSession"),
    (["TerminateSession"], "TerminateSession"),
    (["TerminateSession"], "CompleteSession"),
]


@pytest.mark.parametrize(("before", "rpc", "status"), LEGAL)
async def test_legal_transitions(
    app_stack: Stack, before: list[str], rpc: str, status: int
) -> None:
    session = await new_session(app_stack)
    for step in before:
        await move(app_stack, step, session.session_id)
    moved = await move(app_stack, rpc, session.session_id)
    assert moved.status == status
    assert moved.etag != session.etag
    got = await app_stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session.session_id)
    )
    assert got.status == status


@pytest.mark.parametrize(("before", "rpc"), ILLEGAL)
async def test_illegal_transitions_are_failed_precondition(
    app_stack: Stack, before: list[str], rpc: str
) -> None:
    session = await new_session(app_stack)
    for step in before:
        await move(app_stack, step, session.session_id)
    current = await app_stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session.session_id)
    )
    error = await rpc_error(move(app_stack, rpc, session.session_id))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "ILLEGAL_TRANSITION"
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert violation.type == "SESSION_STATUS"
    assert violation.subject == f"sessions/{session.session_id}"
    after = await app_stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session.session_id)
    )
    assert after == current


async def test_fail_records_the_error_and_resume_can_upgrade_the_config(
    app_stack: Stack,
) -> None:
    failed = await move(
        app_stack, "FailSession", (await new_session(app_stack)).session_id, error_message="boom"
    )
    assert failed.error_message == "boom"
    session = await new_session(app_stack, start=True)
    assert session.status == S.SESSION_STATUS_ACTIVE
    await move(app_stack, "CompleteSession", session.session_id)
    await create_config(app_stack, "other", "bundle:\n  name: other\n")
    await app_stack.configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id="app", description="rev 2")
        )
    )
    resumed = await move(app_stack, "ResumeSession", session.session_id, upgrade_config=True)
    assert resumed.status == S.SESSION_STATUS_ACTIVE
    assert resumed.config_revision == 2


async def test_create_validates_its_request(app_stack: Stack) -> None:
    for kwargs, field in (
        ({"session_id": "bad id"}, "session_id"),
        ({"config_revision": -1}, "config_revision"),
        ({"tags": {"bad key!": "x"}}, "tags['bad key!']"),
    ):
        error = await rpc_error(new_session(app_stack, **kwargs))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, kwargs
        fields = [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]
        assert fields == [field]
    await new_session(app_stack, session_id="s-1")
    taken = await rpc_error(new_session(app_stack, session_id="s-1"))
    assert taken.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_create_is_idempotent_with_a_request_id(app_stack: Stack) -> None:
    first = await new_session(app_stack, request_id="r-1", tags={"a": "b"})
    await move(app_stack, "StartSession", first.session_id)
    again = await new_session(app_stack, request_id="r-1", tags={"a": "b"})
    assert again == first  # the first response, even though the session has moved on
    racing = await asyncio.gather(*(new_session(app_stack, request_id="r-2") for _ in range(6)))
    assert len({s.session_id for s in racing}) == 1
    listed = await app_stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
    assert listed.total_size == 2
    reused = await rpc_error(new_session(app_stack, request_id="r-1", tags={"x": "y"}))
    assert reused.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_list_filters_and_pages(app_stack: Stack) -> None:
    await create_config(app_stack, "other", "bundle:\n  name: other\n")
    made = []
    for n in range(7):
        made.append(await new_session(app_stack, tags={"n": str(n % 2)}, start=n < 3))
    await app_stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="other")
    )

    async def ids(filter_text: str, page_size: int = 2) -> list[str]:
        found: list[str] = []
        token = ""
        while True:
            page = await app_stack.sessions.ListSessions(
                session_service_pb2.ListSessionsRequest(
                    filter=filter_text, page_size=page_size, page_token=token
                )
            )
            found.extend(s.session_id for s in page.sessions)
            token = page.next_page_token
            if not token:
                return found

    assert await ids('config_id = "app"') == [s.session_id for s in made]
    assert await ids("status = ACTIVE") == [s.session_id for s in made[:3]]
    assert await ids("status = SESSION_STATUS_CREATED AND tags.n = 0") == [
        made[4].session_id,
        made[6].session_id,
    ]
    assert len(await ids("config_id = other")) == 1
    bad = await rpc_error(
        app_stack.sessions.ListSessions(
            session_service_pb2.ListSessionsRequest(filter="status = x")
        )
    )
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_transcript_is_paged_oldest_first(app_stack: Stack) -> None:
    session = await new_session(app_stack, start=True)
    roles = [S.ROLE_USER, S.ROLE_ASSISTANT] * 6
    for n, role in enumerate(roles):
        await app_stack.sessions.AppendMessage(
            session_service_pb2.AppendMessageRequest(
                session_id=session.session_id,
                message=S.Message(role=role, content=f"message {n}"),
            )
        )
    await app_stack.sessions.AppendMessage(
        session_service_pb2.AppendMessageRequest(
            session_id=session.session_id,
            message=S.Message(
                role=S.ROLE_ASSISTANT,
                tool_calls=[S.ToolCall(tool_call_id="c1", name="read", arguments_json="{}")],
            ),
        )
    )
    await app_stack.sessions.AppendMessage(
        session_service_pb2.AppendMessageRequest(
            session_id=session.session_id,
            message=S.Message(role=S.ROLE_TOOL, tool_call_id="c1", content="file text"),
        )
    )
    messages: list[session_pb2.Message] = []
    token = ""
    while True:
        page = await app_stack.sessions.ListMessages(
            session_service_pb2.ListMessagesRequest(
                session_id=session.session_id, page_size=5, page_token=token
            )
        )
        messages.extend(page.messages)
        token = page.next_page_token
        if not token:
            break
    assert [m.sequence for m in messages] == list(range(1, 15))
    assert [m.content for m in messages[:12]] == [f"message {n}" for n in range(12)]
    assert messages[12].tool_calls[0].name == "read"
    assert messages[13].tool_call_id == "c1"
    got = await app_stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session.session_id)
    )
    assert got.message_count == 14


async def test_bad_messages_and_closed_sessions_are_refused(app_stack: Stack) -> None:
    session = await new_session(app_stack)
    for message, field in (
        (S.Message(content="no role"), "message.role"),
        (S.Message(role=S.ROLE_TOOL, content="x"), "message.tool_call_id"),
        (
            S.Message(
                role=S.ROLE_USER,
                tool_calls=[S.ToolCall(tool_call_id="c", name="n", arguments_json="{")],
            ),
            "message.tool_calls",
        ),
    ):
        error = await rpc_error(
            app_stack.sessions.AppendMessage(
                session_service_pb2.AppendMessageRequest(
                    session_id=session.session_id, message=message
                )
            )
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        fields = [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]
        assert field in fields
    await move(app_stack, "TerminateSession", session.session_id)
    closed = await rpc_error(
        app_stack.sessions.AppendMessage(
            session_service_pb2.AppendMessageRequest(
                session_id=session.session_id, message=S.Message(role=S.ROLE_USER, content="hi")
            )
        )
    )
    assert closed.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(closed).reason == "SESSION_CLOSED"


async def test_delete_removes_the_session_and_its_transcript(app_stack: Stack) -> None:
    session = await new_session(app_stack)
    await app_stack.sessions.AppendMessage(
        session_service_pb2.AppendMessageRequest(
            session_id=session.session_id, message=S.Message(role=S.ROLE_USER, content="hi")
        )
    )
    await app_stack.sessions.DeleteSession(
        session_service_pb2.DeleteSessionRequest(session_id=session.session_id)
    )
    for call in (
        app_stack.sessions.GetSession(
            session_service_pb2.GetSessionRequest(session_id=session.session_id)
        ),
        app_stack.sessions.ListMessages(
            session_service_pb2.ListMessagesRequest(session_id=session.session_id)
        ),
        app_stack.sessions.DeleteSession(
            session_service_pb2.DeleteSessionRequest(session_id=session.session_id)
        ),
    ):
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert error_info(error).reason == "SESSION_NOT_FOUND"
