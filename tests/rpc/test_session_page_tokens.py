"""SessionService's lists refuse any page token whose position they did not issue.

Even a token signed with the right key (a guessed default key, say) but holding a position of
the wrong shape is INVALID_ARGUMENT, never INTERNAL.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from shared._generated.tandem.session.v1 import session_service_pb2
from shared.listing import PageTokenKeys, encode_page_token, page_scope
from tests.support.configs import create_config
from tests.support.pair import Stack
from tests.support.rpc import error_info, rpc_error

KEY = "a-known-page-token-key-0123456789"


@pytest.fixture
def known_key(monkeypatch: pytest.MonkeyPatch) -> PageTokenKeys:
    monkeypatch.setenv("TANDEM_PAGE_TOKEN_KEY", KEY)
    return PageTokenKeys.from_setting(KEY)


@pytest.mark.parametrize(
    "position",
    [["not-a-time", "s"], [1, 2], ["2026-01-01T00:00:00+00:00"], ["2026-01-01", "s", "x"]],
)
async def test_sessions_refuse_a_signed_position_of_the_wrong_shape(
    known_key: PageTokenKeys, stack: Stack, position: list[Any]
) -> None:
    token = encode_page_token(position, page_scope("sessions", "default", ""), known_key)
    error = await rpc_error(
        stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest(page_token=token))
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("position", [["abc"], [1, 2], ["1"]])
async def test_messages_refuse_a_signed_position_of_the_wrong_shape(
    known_key: PageTokenKeys, stack: Stack, position: list[Any]
) -> None:
    await create_config(stack, "app", "bundle:\n  name: app\n")
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app")
    )
    scope = page_scope("messages", "default", session.session_id)
    token = encode_page_token(position, scope, known_key)
    error = await rpc_error(
        stack.sessions.ListMessages(
            session_service_pb2.ListMessagesRequest(session_id=session.session_id, page_token=token)
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_PAGE_TOKEN"


async def test_a_token_the_service_issued_still_pages(
    known_key: PageTokenKeys, stack: Stack
) -> None:
    del known_key
    await create_config(stack, "app", "bundle:\n  name: app\n")
    for _ in range(3):
        await stack.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id="app")
        )
    first = await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest(page_size=2))
    rest = await stack.sessions.ListSessions(
        session_service_pb2.ListSessionsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert len(first.sessions) == 2
    assert len(rest.sessions) == 1
    assert rest.next_page_token == ""
