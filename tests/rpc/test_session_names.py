"""Session display names: set by a client on create, or by hooks-session-naming after a turn."""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rpc_error
from tests.support.turns import bundle, collect, send

FIRST = "  Plan the Q3 migration of the billing database to the new cluster, please!\nDetails…"


async def named_config(stack: Stack, naming: dict[str, object] | None = None) -> None:
    hooks = [{"module": "hooks-session-naming", "config": naming or {}}]
    document = bundle({"reply": "On it."}).replace(
        '"providers"', f'"hooks": {json.dumps(hooks)},\n"providers"'
    )
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="named", config=config_pb2.Config(name="named", yaml_content=document)
        )
    )


async def create(stack: Stack, display_name: str = "") -> session_pb2.Session:
    return await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(
            config_id="named", start=True, display_name=display_name
        )
    )


async def name_of(stack: Stack, session_id: str) -> str:
    session = await stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session_id)
    )
    return str(session.display_name)


async def test_the_first_exchange_names_the_session_once(stack: Stack) -> None:
    await named_config(stack)
    session = await create(stack)
    assert session.display_name == ""
    await collect(send(stack.sessions, session.session_id, FIRST))
    expected = "Plan the Q3 migration of the billing database to…"
    assert len(expected) <= 50
    assert await name_of(stack, session.session_id) == expected
    # Later turns keep the name.
    await collect(send(stack.sessions, session.session_id, "Something else entirely"))
    assert await name_of(stack, session.session_id) == expected


async def test_a_name_the_client_gave_is_kept(stack: Stack) -> None:
    await named_config(stack)
    session = await create(stack, "Billing move")
    assert session.display_name == "Billing move"
    await collect(send(stack.sessions, session.session_id, FIRST))
    assert await name_of(stack, session.session_id) == "Billing move"


async def test_naming_waits_for_the_configured_turn(stack: Stack) -> None:
    await named_config(stack, {"initial_trigger_turn": 2, "max_name_length": 20})
    session = await create(stack)
    await collect(send(stack.sessions, session.session_id, "Short question"))
    assert await name_of(stack, session.session_id) == ""
    await collect(send(stack.sessions, session.session_id, "A follow-up"))
    # Named after the second turn, still from the first exchange.
    assert await name_of(stack, session.session_id) == "Short question"


@pytest.mark.parametrize(
    ("name", "problem"),
    [("tab\there", "must not contain control characters"), ("x" * 257, "at most 256")],
)
async def test_a_bad_display_name_is_refused_and_located(
    stack: Stack, name: str, problem: str
) -> None:
    await named_config(stack)
    error = await rpc_error(create(stack, name))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_DISPLAY_NAME"
    [violation] = detail(error, error_details_pb2.BadRequest).field_violations
    assert violation.field == "display_name"
    assert problem in violation.description
    listed = await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
    assert list(listed.sessions) == []
