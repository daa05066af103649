"""Hostile input through real stubs: deep and huge structures, NUL bytes, ids with a newline,
forged page tokens and very long ids.

Each is refused with the documented status and the field named, the refusal is readable by a
default client through `rpc_status.from_call`, and the service keeps answering others.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from shared.app import ServiceApp
from tests.support.configs import DOC, create_config
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rich_status, rpc_error
from tests.support.secured import auth, secured_stack
from tests.support.turns import bundle
from tests.support.wire import add_tool_bytes, deep_struct, padded_leaf, send_message_bytes

CONFIG = "/tandem.config.v1.ConfigService/"
SESSION = "/tandem.session.v1.SessionService/"

# --- raw calls, for requests no generated stub can build (wire bytes: tests/support/wire.py) -


def raw_unary(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


def raw_stream(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_stream(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


async def stream_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


def violation_fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]


def assert_invalid(error: grpc.aio.AioRpcError, field_name: str, reason: str = "") -> None:
    """INVALID_ARGUMENT naming field_name, readable as a rich status by a default client."""
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert field_name in violation_fields(error), violation_fields(error)
    if reason:
        assert error_info(error).reason == reason


async def active_session(stack: Stack, config_id: str = "agent") -> str:
    await create_config(stack, config_id, bundle({}))
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=config_id, start=True)
    )
    return str(created.session_id)


# --- finding 3: deep nesting, and authentication before any decoding ------------------------


@pytest.mark.parametrize("levels", [40, 400, 10_000])
async def test_deeply_nested_structs_are_invalid_argument_naming_the_field(
    config_service: ServiceApp, session_service: ServiceApp, levels: int
) -> None:
    struct = deep_struct(levels)
    async with grpc.aio.insecure_channel(session_service.server.address) as channel:
        call = raw_stream(channel, SESSION + "SendMessage")(send_message_bytes("s-1", struct))
        assert_invalid(await stream_error(call), "context", "NESTING_TOO_DEEP")
        # The server is fine afterwards.
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1
    async with grpc.aio.insecure_channel(config_service.server.address) as channel:
        error = await rpc_error(raw_unary(channel, CONFIG + "AddTool")(add_tool_bytes("c", struct)))
        assert_invalid(error, "config", "NESTING_TOO_DEEP")


async def test_authentication_comes_before_decoding_a_deep_request(
    sqlite_url: str, tmp_path: Path
) -> None:
    deep = send_message_bytes("s-1", deep_struct(10_000))
    # 400 levels around a 256 KiB string: walking it by copying each level's remaining bytes
    # cost about 100 MiB.
    padded = send_message_bytes("s-1", deep_struct(400, padded_leaf(256 * 1024)))
    async with (
        secured_stack(sqlite_url, tmp_path) as stack,
        grpc.aio.insecure_channel(stack.session_app.server.address) as channel,
    ):
        send = raw_stream(channel, SESSION + "SendMessage")
        anonymous = await stream_error(send(deep))
        assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
        tracemalloc.start()
        try:
            refused = await stream_error(send(padded))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
        # A generous bound: the request is 256 KiB; nothing decodes it before the key check.
        assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
        # With a key, the same requests get the located refusal.
        for request in (deep, padded):
            keyed = await stream_error(send(request, metadata=auth("a-writer")))
            assert_invalid(keyed, "context", "NESTING_TOO_DEEP")


# --- finding 8: size caps on the way in, and heavy work off the event loop ------------------


def big_struct(keys: int) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({f"key-{n}": n for n in range(keys)})
    return struct


async def test_huge_structs_and_tag_maps_are_refused_naming_the_field(stack: Stack) -> None:
    config = await create_config(stack, "agent")
    for keys in (20_000, 400_000):
        error = await rpc_error(
            stack.configs.AddTool(
                config_service_pb2.AddToolRequest(
                    config_id="agent", module="tool-x", config=big_struct(keys)
                )
            )
        )
        assert_invalid(error, "config")
    session_id = await active_session(stack, "other")
    error = await stream_error(
        stack.sessions.SendMessage(
            session_service_pb2.SendMessageRequest(
                session_id=session_id, content="hi", context=big_struct(20_000)
            )
        )
    )
    assert_invalid(error, "context")
    many_tags = {f"team-{n}": "x" for n in range(10_000)}
    error = await rpc_error(
        stack.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id="agent", tags=many_tags)
        )
    )
    assert_invalid(error, "tags")
    # Thousands of bad tag keys: one refusal that still fits a default client's trailers.
    bad_tags = {f"-bad-{n}": "x" for n in range(5_000)}
    error = await rpc_error(
        stack.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config=config_pb2.Config(name="tagged", yaml_content=DOC, tags=bad_tags)
            )
        )
    )
    assert_invalid(error, "config.tags")
    # Nothing changed.
    current = await stack.configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="agent"))
    assert current.revision == config.revision


def heavy_document(tools: int) -> str:
    lines = ["bundle:", "  name: heavy", "tools:"]
    for n in range(tools):
        lines.append(f"  - module: tool-{n}\n    config:\n      a: {n}\n      b: text-{n}")
    return "\n".join(lines) + "\n"


async def test_health_and_other_calls_answer_while_a_heavy_edit_runs(
    config_app: ServiceApp, configs: Any
) -> None:
    # Near the document caps: editing it in place takes seconds of CPU.
    await configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="heavy",
            config=config_pb2.Config(name="heavy", yaml_content=heavy_document(1_900)),
        )
    )
    await configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="light", config=config_pb2.Config(name="light", yaml_content=DOC)
        )
    )
    async with grpc.aio.insecure_channel(config_app.server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        edit = asyncio.ensure_future(
            configs.AddTool(config_service_pb2.AddToolRequest(config_id="heavy", module="tool-new"))
        )
        answered = 0
        other_read = False
        while not edit.done():
            check = await health.Check(health_pb2.HealthCheckRequest())
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            got = await configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="light"))
            assert got.config_id == "light"
            if not edit.done():
                answered += 1
                other_read = True
        edited = await edit
    assert "tool-new" in edited.summary.tools
    # A blocked event loop would have answered nothing until the edit was done.
    assert other_read
    assert answered >= 10, answered


# --- finding 10: NUL characters, refused at the boundary on both services -------------------

NUL = "a\x00b"

Request = Callable[[Stack], Awaitable[Any]]


def _config_call(method: str, request: Any) -> Request:
    return lambda stack: getattr(stack.configs, method)(request)


def _session_call(method: str, request: Any) -> Request:
    return lambda stack: getattr(stack.sessions, method)(request)


async def _send(stack: Stack, request: Any) -> Any:
    async for event in stack.sessions.SendMessage(request):
        return event
    return None


C = config_service_pb2
S = session_service_pb2
NUL_CASES: dict[str, tuple[Request, str]] = {
    "GetConfig.config_id": (
        _config_call("GetConfig", C.GetConfigRequest(config_id=NUL)),
        "config_id",
    ),
    "DeleteConfig.config_id": (
        _config_call("DeleteConfig", C.DeleteConfigRequest(config_id=NUL)),
        "config_id",
    ),
    "ListConfigs.filter": (
        _config_call("ListConfigs", C.ListConfigsRequest(filter=f'name = "{NUL}"')),
        "filter",
    ),
    "ListConfigs.page_token": (
        _config_call("ListConfigs", C.ListConfigsRequest(page_token=NUL)),
        "page_token",
    ),
    "CreateConfig.request_id": (
        _config_call(
            "CreateConfig",
            C.CreateConfigRequest(
                request_id=NUL, config=config_pb2.Config(name="n", yaml_content=DOC)
            ),
        ),
        "request_id",
    ),
    "CreateConfig.config.name": (
        _config_call(
            "CreateConfig",
            C.CreateConfigRequest(config=config_pb2.Config(name=NUL, yaml_content=DOC)),
        ),
        "config.name",
    ),
    "CreateConfig.config.description": (
        _config_call(
            "CreateConfig",
            C.CreateConfigRequest(
                config=config_pb2.Config(name="n", description=NUL, yaml_content=DOC)
            ),
        ),
        "config.description",
    ),
    "CreateConfig.config.tags": (
        _config_call(
            "CreateConfig",
            C.CreateConfigRequest(
                config=config_pb2.Config(name="n", tags={"team": NUL}, yaml_content=DOC)
            ),
        ),
        'config.tags["team"]',
    ),
    "UpdateConfig.config.description": (
        _config_call(
            "UpdateConfig",
            C.UpdateConfigRequest(
                config=config_pb2.Config(config_id="agent", description=NUL),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
        ),
        "config.description",
    ),
    "AddTool.module": (
        _config_call("AddTool", C.AddToolRequest(config_id="agent", module=NUL)),
        "module",
    ),
    "AddTool.config": (
        _config_call(
            "AddTool",
            C.AddToolRequest(
                config_id="agent",
                module="tool-x",
                config=struct_pb2.Struct(fields={"k": struct_pb2.Value(string_value=NUL)}),
            ),
        ),
        'config["k"]',
    ),
    "GetSession.session_id": (
        _session_call("GetSession", S.GetSessionRequest(session_id=NUL)),
        "session_id",
    ),
    "ListSessions.filter": (
        _session_call("ListSessions", S.ListSessionsRequest(filter=f'tags.team = "{NUL}"')),
        "filter",
    ),
    "CreateSession.config_id": (
        _session_call("CreateSession", S.CreateSessionRequest(config_id=NUL)),
        "config_id",
    ),
    "CreateSession.request_id": (
        _session_call("CreateSession", S.CreateSessionRequest(config_id="agent", request_id=NUL)),
        "request_id",
    ),
    "CreateSession.tags": (
        _session_call("CreateSession", S.CreateSessionRequest(config_id="agent", tags={NUL: "x"})),
        "tags",
    ),
    "FailSession.error_message": (
        _session_call("FailSession", S.FailSessionRequest(session_id="s", error_message=NUL)),
        "error_message",
    ),
    "AppendMessage.message.content": (
        _session_call(
            "AppendMessage",
            S.AppendMessageRequest(
                session_id="s", message=session_pb2.Message(role=session_pb2.ROLE_USER, content=NUL)
            ),
        ),
        "message.content",
    ),
    "SendMessage.content": (
        lambda stack: _send(stack, S.SendMessageRequest(session_id="s", content=NUL)),
        "content",
    ),
    "SendMessage.request_id": (
        lambda stack: _send(
            stack, S.SendMessageRequest(session_id="s", content="hi", request_id=NUL)
        ),
        "request_id",
    ),
}


@pytest.mark.parametrize("case", list(NUL_CASES))
async def test_nul_characters_are_invalid_argument_naming_the_field(
    stack: Stack, case: str
) -> None:
    # Real targets, so a request that got past the boundary would reach the database.
    session_id = await active_session(stack)
    request, expected = NUL_CASES[case]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await request(stack)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    fields = violation_fields(error)
    assert any(f == expected or f.startswith(expected) for f in fields), fields
    assert error_info(error).reason == "NUL_CHARACTER"
    # Nothing was written: the config is at its first revision, the transcript empty.
    config = await stack.configs.GetConfig(C.GetConfigRequest(config_id="agent"))
    assert (config.revision, config.description) == (1, "")
    session = await stack.sessions.GetSession(S.GetSessionRequest(session_id=session_id))
    assert session.message_count == 0


# --- finding 11: ids and names are matched whole --------------------------------------------


async def test_ids_names_and_tag_keys_with_a_trailing_newline_are_refused(stack: Stack) -> None:
    await create_config(stack, "agent")
    cases: list[tuple[Awaitable[Any], str]] = [
        (
            stack.configs.CreateConfig(
                C.CreateConfigRequest(
                    config_id="a" * 64 + "\n", config=config_pb2.Config(name="x", yaml_content=DOC)
                )
            ),
            "config_id",
        ),
        (
            stack.configs.CreateConfig(
                C.CreateConfigRequest(
                    config_id="ok\n", config=config_pb2.Config(name="x", yaml_content=DOC)
                )
            ),
            "config_id",
        ),
        (
            stack.configs.CreateConfig(
                C.CreateConfigRequest(config=config_pb2.Config(name="x\n", yaml_content=DOC))
            ),
            "config.name",
        ),
        (
            stack.configs.CreateConfig(
                C.CreateConfigRequest(
                    config=config_pb2.Config(name="y", tags={"team\n": "a"}, yaml_content=DOC)
                )
            ),
            "config.tags",
        ),
        (
            stack.sessions.CreateSession(
                S.CreateSessionRequest(config_id="agent", session_id="s" * 64 + "\n")
            ),
            "session_id",
        ),
        (
            stack.sessions.CreateSession(
                S.CreateSessionRequest(config_id="agent", tags={"team\n": "a"})
            ),
            "tags",
        ),
    ]
    for call, expected in cases:
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (expected, error.details())
        assert any(f.startswith(expected) for f in violation_fields(error)), expected
    listed = await stack.configs.ListConfigs(C.ListConfigsRequest())
    assert [c.config_id for c in listed.configs] == ["agent"]
    sessions = await stack.sessions.ListSessions(S.ListSessionsRequest())
    assert list(sessions.sessions) == []


# --- finding 12: page tokens are signed and bound to the tenant -----------------------------


def unkeyed_token(position: Any, *parts: str) -> str:
    """A token as anyone could compute it when scopes were an unkeyed hash."""
    scope = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    raw = json.dumps({"a": position, "s": scope}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GARBLED = [
    "!!!",
    "e30",  # {}
    base64.urlsafe_b64encode(b"[1,2,3]").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "a" * 5000,
    "x.y.z",
]


async def test_forged_and_garbled_page_tokens_are_invalid_argument(stack: Stack) -> None:
    for n in range(3):
        await create_config(stack, f"agent-{n}")
    session_id = await active_session(stack, "chat")
    await stack.sessions.AppendMessage(
        S.AppendMessageRequest(
            session_id=session_id,
            message=session_pb2.Message(role=session_pb2.ROLE_USER, content="hello"),
        )
    )
    lists: list[tuple[Callable[[str], Awaitable[Any]], list[str]]] = [
        (
            lambda token: stack.configs.ListConfigs(C.ListConfigsRequest(page_token=token)),
            [
                unkeyed_token([[1]], "configs", "default", ""),
                unkeyed_token(["a"], "configs", "default", ""),
            ],
        ),
        (
            lambda token: stack.configs.ListConfigRevisions(
                C.ListConfigRevisionsRequest(config_id="agent-0", page_token=token)
            ),
            [unkeyed_token([[1]], "revisions", "default", "agent-0")],
        ),
        (
            lambda token: stack.sessions.ListSessions(S.ListSessionsRequest(page_token=token)),
            [unkeyed_token(["not a time", "x"], "sessions", "default", "")],
        ),
        (
            lambda token: stack.sessions.ListMessages(
                S.ListMessagesRequest(session_id=session_id, page_token=token)
            ),
            [unkeyed_token([{"x": 1}], "messages", "default", session_id)],
        ),
    ]
    for list_call, forged in lists:
        for token in [*forged, *GARBLED]:
            error = await rpc_error(list_call(token))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (token[:40], error.details())
            assert violation_fields(error) == ["page_token"]
    # Real tokens still page through everything.
    first = await stack.configs.ListConfigs(C.ListConfigsRequest(page_size=2))
    rest = await stack.configs.ListConfigs(
        C.ListConfigsRequest(page_size=2, page_token=first.next_page_token)
    )
    names = [c.name for c in [*first.configs, *rest.configs]]
    assert sorted(names) == ["agent-0", "agent-1", "agent-2", "chat"]


async def test_a_page_token_of_another_tenant_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    async with secured_stack(sqlite_url, tmp_path) as stack:
        for who in ("a-writer", "b-writer"):
            for n in range(3):
                await stack.configs.CreateConfig(
                    C.CreateConfigRequest(
                        config_id=f"c{n}", config=config_pb2.Config(name=f"c{n}", yaml_content=DOC)
                    ),
                    metadata=auth(who),
                )
        first = await stack.configs.ListConfigs(
            C.ListConfigsRequest(page_size=1), metadata=auth("a-writer")
        )
        assert first.next_page_token
        error = await rpc_error(
            stack.configs.ListConfigs(
                C.ListConfigsRequest(page_size=1, page_token=first.next_page_token),
                metadata=auth("b-writer"),
            )
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert violation_fields(error) == ["page_token"]


# --- finding 14: long ids are echoed capped, so every client can read the error ------------


@pytest.mark.parametrize("length", [3_000, 20_000])
async def test_very_long_ids_get_a_status_a_default_client_can_read(
    stack: Stack, length: int
) -> None:
    long_id = "x" * length
    calls = [
        stack.configs.GetConfig(C.GetConfigRequest(config_id=long_id)),
        stack.configs.DeleteConfig(C.DeleteConfigRequest(config_id=long_id)),
        stack.configs.ListConfigRevisions(C.ListConfigRevisionsRequest(config_id=long_id)),
        stack.sessions.GetSession(S.GetSessionRequest(session_id=long_id)),
        stack.sessions.CreateSession(S.CreateSessionRequest(config_id=long_id)),
    ]
    for call in calls:
        error = await rpc_error(call)
        message = error.details() or ""
        assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (
            error.code(),
            message[:200],
        )
        status = rich_status(error)  # from_call: code and message agree, details decode
        assert len(status.SerializeToString()) < 4096
        assert len(message) < 1024
        assert error_info(error).reason
