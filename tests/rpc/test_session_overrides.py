"""Per-session overrides through real stubs, on both databases.

CreateSession.overrides is a bundle fragment composed last over the prepared config: the
model a turn asks for, the tools it offers and the session's stored state follow it, a bad
fragment makes no session, and sessions with the same overrides share one prepared bundle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.llm_servers import LlmServer, llm_server, openai_text_reply, stream
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rpc_error
from tests.support.turns import bundle, collect, get_session, kinds, send, text_of

MODEL_OVERRIDE = """\
# Same provider entry (matched by module), another model; the rest of its config stays.
providers:
  - module: provider-openai
    config:
      default_model: gpt-override
"""


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def openai_config(server: LlmServer) -> str:
    document: dict[str, Any] = {
        "bundle": {"name": "chat"},
        "session": {"orchestrator": "loop-streaming"},
        "providers": [
            {
                "module": "provider-openai",
                "config": {
                    "default_model": "gpt-config",
                    "base_url": f"{server.origin}/v1",
                    "api_key": "${TANDEM_TEST_SECRET}",
                    "max_retries": 0,
                },
            }
        ],
        "tools": [{"module": "tool-filesystem"}],
    }
    return f"---\n{json.dumps(document)}\n---\nYou answer briefly.\n"


async def store(stack: Stack, yaml_content: str, name: str = "chat") -> None:
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=name, config=config_pb2.Config(name=name, yaml_content=yaml_content)
        )
    )


async def create(stack: Stack, overrides: str = "", config_id: str = "chat") -> str:
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(
            config_id=config_id, start=True, overrides=overrides
        )
    )
    return str(created.session_id)


async def session_count(stack: Stack) -> int:
    listed = await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
    return int(listed.total_size)


def answer(text: str) -> Any:
    return stream(openai_text_reply([text]))


async def test_an_override_changes_the_model_the_turn_asks_for(
    stack: Stack, server: LlmServer
) -> None:
    await store(stack, openai_config(server))
    overridden = await create(stack, MODEL_OVERRIDE)
    plain = await create(stack)
    server.script(answer("from the override"), answer("from the config"))

    events = await collect(send(stack.sessions, overridden, "hello"))
    assert kinds(events)[-1] == "turn_completed"
    assert text_of(events) == "from the override"
    events = await collect(send(stack.sessions, plain, "hello"))
    assert text_of(events) == "from the config"

    first, second = (request.body for request in server.requests)
    assert (first["model"], second["model"]) == ("gpt-override", "gpt-config")
    # Only the model changed: the config's instruction and key still reach the model.
    assert first["messages"][0] == {"role": "system", "content": "You answer briefly."}
    assert server.requests[0].headers["authorization"] == "Bearer s3cr3t-value-never-shown"

    # GetSession shows the overrides as given; a session without them shows none.
    assert (await get_session(stack, overridden)).overrides == MODEL_OVERRIDE
    assert (await get_session(stack, plain)).overrides == ""


async def test_a_removed_tool_is_not_offered_to_the_model(stack: Stack, server: LlmServer) -> None:
    await store(stack, openai_config(server))
    without = await create(stack, "remove:\n  tools: [tool-filesystem]\n")
    plain = await create(stack)
    server.script(answer("no tools"), answer("tools"))
    await collect(send(stack.sessions, without, "hi"))
    await collect(send(stack.sessions, plain, "hi"))
    first, second = (request.body for request in server.requests)
    assert not first.get("tools")
    assert {t["function"]["name"] for t in second["tools"]} >= {"read_file", "write_file"}


async def test_an_override_naming_a_module_not_installed_is_refused_and_makes_no_session(
    stack: Stack, server: LlmServer
) -> None:
    await store(stack, openai_config(server))
    before = await session_count(stack)
    fragment = "tools:\n  - module: tool-filesystem\n  - module: tool-not-installed\n"
    error = await rpc_error(create(stack, fragment))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_OVERRIDES"
    [violation] = detail(error, error_details_pb2.BadRequest).field_violations
    assert violation.field == "overrides.tools[1].module"
    assert "MODULE_NOT_INSTALLED" in violation.description
    assert "line 3" in violation.description
    assert await session_count(stack) == before
    assert not server.requests


MALFORMED = [
    ("includes:\n  - other\n", "overrides.includes"),
    ("---\ntools: []\n---\nYou are someone else.\n", "overrides"),
    ("- not\n- a mapping\n", "overrides"),
    ("remove:\n  tools: [tool-web]\n", "overrides.remove.tools[0]"),
]


async def test_malformed_overrides_are_refused_located(stack: Stack, server: LlmServer) -> None:
    await store(stack, openai_config(server))
    for fragment, field in MALFORMED:
        error = await rpc_error(create(stack, fragment))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, fragment
        fields = [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]
        assert fields == [field], fragment
    assert await session_count(stack) == 0


async def test_sessions_with_the_same_overrides_share_one_prepared_bundle(stack: Stack) -> None:
    await store(stack, bundle({"reply": "plain"}))
    cache = stack.session_app.cache
    await create(stack)
    base = cache.stats()
    fragment = "providers:\n  - module: provider-echo\n    config: {reply: overridden}\n"
    await create(stack, fragment)
    first = cache.stats()
    assert (first.size, first.misses) == (base.size + 1, base.misses + 1)
    # The same overrides, formatted otherwise: the same entry, a hit.
    same = "# again\nproviders: [{config: {reply: overridden}, module: provider-echo}]\n"
    session_id = await create(stack, same)
    again = cache.stats()
    assert (again.size, again.hits, again.misses) == (first.size, first.hits + 1, first.misses)
    events = await collect(send(stack.sessions, session_id, "hi"))
    assert text_of(events) == "overridden"
    # Other overrides are another entry.
    await create(stack, fragment.replace("overridden", "other"))
    assert cache.stats().size == first.size + 1


async def test_one_call_chat_creates_its_session_with_the_overrides(stack: Stack) -> None:
    await store(stack, bundle({"reply": "plain"}))
    fragment = "providers:\n  - module: provider-echo\n    config: {reply: overridden}\n"
    call = stack.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(
            config_id="chat", content="hi", overrides=fragment, request_id="r-1"
        )
    )
    events = await collect(call)
    assert kinds(events)[0] == "session_created"
    created = events[0].session_created.session
    assert created.overrides == fragment
    assert text_of(events) == "overridden"
    assert (await get_session(stack, created.session_id)).overrides == fragment

    # A bad fragment makes no session; overrides with session_id are refused.
    bad = stack.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(
            config_id="chat", content="hi", overrides="tools:\n  - module: tool-nope\n"
        )
    )
    error = await rpc_error(collect(bad))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await session_count(stack) == 1
    misplaced = stack.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(
            session_id=created.session_id, content="hi", overrides=fragment
        )
    )
    error = await rpc_error(collect(misplaced))
    fields = [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]
    assert fields == ["overrides"]
