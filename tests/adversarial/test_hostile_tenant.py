"""A tenant-B writer attacks tenant A through every RPC with hostile input.

Tenant A holds a config, a session with a private transcript, a file in its workspace and a
secret of its own; SessionService's environment holds the operator's credentials. Tenant B
writes hostile bundles (environment references, host paths, huge and deep structures, NUL
bytes) and forges tokens. Every answer must be the documented status, and at the end nothing
of A's has changed and nothing secret has reached B in any response, error or trailer.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tests.support.rpc import detail, error_info, rich_status
from tests.support.secured import Secured, auth, secret, secured_stack

OPERATOR_KEY = "sk-operator-openai-key-0123456789"
DATABASE_PASSWORD = "db-password-never-shown"
A_SECRET = "tenant-a-own-credential-42"
A_PRIVATE = "A's private plans for the launch"
A_DIARY = "A's diary: do not read"

A = auth("a-writer")
B = auth("b-writer")
B_ADMIN = auth("b-admin")


class Attacker:
    """Tenant B's calls; every answer it gets is kept for the final leak scan."""

    def __init__(self, secured: Secured) -> None:
        self.configs = secured.configs
        self.sessions = secured.sessions
        self.seen: list[str] = []

    async def refused(self, call: Awaitable[Any]) -> grpc.aio.AioRpcError:
        try:
            answer = await call
        except grpc.aio.AioRpcError as error:
            self.seen.append(f"{error.code()} {error.details()} {rich_status(error)!r}")
            return error
        self.seen.append(repr(answer))
        raise AssertionError(f"expected an error, got {answer!r}")

    async def answer(self, call: Awaitable[Any]) -> Any:
        result = await call
        self.seen.append(repr(result))
        return result

    async def events(self, call: Any) -> list[Any]:
        events = []
        async for event in call:
            self.seen.append(repr(event))
            events.append(event)
        return events

    async def config(self, config_id: str, document: Any) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        await self.answer(
            self.configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id=config_id,
                    config=config_pb2.Config(name=config_id, yaml_content=text),
                ),
                metadata=B,
            )
        )

    def create_session(self, config_id: str) -> Awaitable[Any]:
        return self.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id=config_id, start=True),
            metadata=B,
        )


class Victim:
    """What tenant A holds before the attack."""

    def __init__(self, config: config_pb2.Config, session_id: str, workspace: Path) -> None:
        self.config = config
        self.session_id = session_id
        self.workspace = workspace


@pytest.fixture
def operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in SessionService's environment, some of them allowed for bundles."""
    monkeypatch.setenv("OPENAI_API_KEY", OPERATOR_KEY)
    monkeypatch.setenv("TANDEM_ADVERSARY_DATABASE_URL", f"postgresql://u:{DATABASE_PASSWORD}@db/x")
    monkeypatch.setenv("TANDEM_BUNDLE_ENV_ALLOW", "OPENAI_API_KEY")
    # No host folder beyond the workspaces: the key file sits in the test's folder.
    monkeypatch.setenv("TANDEM_TOOL_ALLOWED_ROOTS", "")


@pytest.fixture
async def secured(
    operator_environment: None, database_url: str, tmp_path: Path
) -> AsyncIterator[Secured]:
    tenants = {"tenant-a": {"secrets": {"A_TOKEN": A_SECRET}}}
    async with secured_stack(database_url, tmp_path, tenants=tenants) as running:
        yield running


def _echo(script: list[dict[str, Any]], **document: Any) -> dict[str, Any]:
    return {
        "bundle": {"name": "echo"},
        "providers": [{"module": "provider-echo", "config": {"script": script}}],
        **document,
    }


@pytest.fixture
async def victim(secured: Secured, tmp_path: Path) -> Victim:
    tools = [{"module": "tool-filesystem"}]
    config = await secured.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="a-config",
            config=config_pb2.Config(
                name="a-config",
                yaml_content=json.dumps(
                    {
                        "bundle": {"name": "a"},
                        "providers": [
                            {
                                "module": "provider-echo",
                                "config": {"api_key": "${A_TOKEN}", "script": [{"reply": "ok"}]},
                            }
                        ],
                        "tools": tools,
                    }
                ),
            ),
        ),
        metadata=A,
    )
    session = await secured.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="a-config", start=True), metadata=A
    )
    async for _ in secured.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(session_id=session.session_id, content=A_PRIVATE),
        metadata=A,
    ):
        pass
    workspace = tmp_path / "workspaces" / "tenant-a" / session.session_id
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "diary.txt").write_text(A_DIARY)
    return Victim(config, session.session_id, workspace)


async def _assert_a_is_intact(secured: Secured, victim: Victim, attacker: Attacker) -> None:
    current = await secured.configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id="a-config"), metadata=A
    )
    assert (current.revision, current.etag, current.yaml_content) == (
        victim.config.revision,
        victim.config.etag,
        victim.config.yaml_content,
    )
    messages = await secured.sessions.ListMessages(
        session_service_pb2.ListMessagesRequest(session_id=victim.session_id), metadata=A
    )
    assert [m.content for m in messages.messages][:1] == [A_PRIVATE]
    assert (victim.workspace / "diary.txt").read_text() == A_DIARY
    everything = "\n".join(attacker.seen)
    for leaked in (OPERATOR_KEY, DATABASE_PASSWORD, A_SECRET, A_PRIVATE, A_DIARY):
        assert leaked not in everything
    for name in ("a-admin", "a-writer", "a-reader", "b-admin", "b-writer", "session-service"):
        assert secret(name) not in everything


def _violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    failure = detail(error, error_details_pb2.PreconditionFailure)
    return [(v.type, v.subject) for v in failure.violations]


async def test_environment_references_reach_nothing(secured: Secured, victim: Victim) -> None:
    attacker = Attacker(secured)
    probes = {
        "env-reply": _echo([{"reply": "${TANDEM_ADVERSARY_DATABASE_URL}"}]),
        "env-allowed-reply": _echo([{"reply": "${OPENAI_API_KEY}"}]),
        "env-a-secret": {
            "bundle": {"name": "x"},
            "providers": [{"module": "provider-echo", "config": {"api_key": "${A_TOKEN}"}}],
        },
        "env-default": _echo([{"reply": "${TANDEM_ADVERSARY_DATABASE_URL:fallback}"}]),
        "env-in-tool": _echo(
            [{"reply": "x"}],
            tools=[{"module": "tool-filesystem", "config": {"allowed_paths": ["${HOME}"]}}],
        ),
    }
    expected = {
        "env-reply": "ENV_NOT_AVAILABLE",
        "env-allowed-reply": "SECRET_OUTSIDE_CREDENTIAL",
        "env-a-secret": "ENV_NOT_AVAILABLE",
        "env-default": "ENV_NOT_AVAILABLE",
        "env-in-tool": "ENV_NOT_AVAILABLE",
    }
    for config_id, document in probes.items():
        await attacker.config(config_id, document)
        error = await attacker.refused(attacker.create_session(config_id))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, config_id
        assert [t for t, _ in _violations(error)] == [expected[config_id]], config_id
        # The dry run reports the same problem as data.
        report = await attacker.answer(
            secured.sessions.PrepareConfig(
                session_service_pb2.PrepareConfigRequest(config_id=config_id), metadata=B
            )
        )
        assert not report.valid, config_id
        assert [v.message.split(":")[0] for v in report.violations] == [expected[config_id]]
    await _assert_a_is_intact(secured, victim, attacker)


async def test_host_paths_and_other_workspaces_are_out_of_reach(
    secured: Secured, victim: Victim
) -> None:
    attacker = Attacker(secured)
    for index, entry in enumerate(
        ["/", "/etc", str(secured.keys), str(victim.workspace), "../../tenant-a", "/proc/self"]
    ):
        config_id = f"paths-{index}"
        await attacker.config(
            config_id,
            _echo(
                [{"reply": "x"}],
                tools=[{"module": "tool-filesystem", "config": {"allowed_write_paths": [entry]}}],
            ),
        )
        error = await attacker.refused(attacker.create_session(config_id))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert _violations(error) == [
            ("TOOL_PATH_NOT_ALLOWED", "tools[0].config.allowed_write_paths")
        ]
    targets = [
        f"../../tenant-a/{victim.session_id}/diary.txt",
        str(victim.workspace / "diary.txt"),
        str(secured.keys),
        "/proc/self/environ",
        "/etc/passwd",
    ]
    script: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": t}} for t in targets]},
        {
            "tool_calls": [
                {
                    "name": "write_file",
                    "arguments": {"path": str(secured.keys), "content": "keys: []"},
                }
            ]
        },
        {"reply": "done"},
    ]
    await attacker.config("reader", _echo(script, tools=[{"module": "tool-filesystem"}]))
    session = await attacker.answer(attacker.create_session("reader"))
    events = await attacker.events(
        secured.sessions.SendMessage(
            session_service_pb2.SendMessageRequest(session_id=session.session_id, content="go"),
            metadata=B,
        )
    )
    results = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert len(results) == len(targets) + 1
    assert all(r.is_error for r in results)
    assert events[-1].HasField("turn_completed")
    # The key file still holds every key: A's writer still works.
    await secured.configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id="a-config"), metadata=A
    )
    await _assert_a_is_intact(secured, victim, attacker)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


async def _raw_unary(
    secured: Secured, service: str, method: str, payload: bytes, metadata: Any
) -> grpc.aio.AioRpcError:
    """Sends payload as the request bytes of a method, as a hostile client can."""
    address = (
        secured.config_app.server.address
        if service.startswith("tandem.config")
        else secured.session_app.server.address
    )
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 200 * 1024 * 1024)]
    ) as channel:
        call = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        try:
            await call(payload, metadata=metadata, timeout=60)
        except grpc.aio.AioRpcError as error:
            return error
    raise AssertionError("the hostile request was accepted")


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_struct_bytes(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        value = _field(5, inner)
        entry = _field(1, b"k") + _field(2, value)
        inner = _field(1, entry)
    return inner


CONFIG = "tandem.config.v1.ConfigService"
SESSION = "tandem.session.v1.SessionService"


async def test_huge_and_deep_structures_are_refused_and_nothing_stalls(
    secured: Secured, victim: Victim
) -> None:
    attacker = Attacker(secured)
    deep = _nested_struct_bytes(10_000)
    # AddToolRequest.config (field 4) and SendMessageRequest.context (field 4).
    add_tool = _field(1, b"a-config") + _field(2, b"tool-x") + _field(4, deep)
    send = _field(1, victim.session_id.encode()) + _field(2, b"hi") + _field(4, deep)
    for service, method, payload in (
        (CONFIG, "AddTool", add_tool),
        (SESSION, "SendMessage", send),
    ):
        error = await _raw_unary(secured, service, method, payload, B)
        attacker.seen.append(f"{error.details()}")
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
        # Without a key the same bytes are refused before anything decodes them.
        anonymous = await _raw_unary(secured, service, method, payload, ())
        assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED, method

    wide = struct_pb2.Struct()
    wide.update({f"k{i}": i for i in range(400_000)})
    health_answered: list[bool] = []

    async def health() -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async with grpc.aio.insecure_channel(secured.config_app.server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=CONFIG), timeout=10)
            health_answered.append(reply.status == health_pb2.HealthCheckResponse.SERVING)

    big = attacker.refused(
        secured.configs.AddTool(
            config_service_pb2.AddToolRequest(
                config_id="a-config", module="tool-filesystem", config=wide
            ),
            metadata=B,
        )
    )
    error, _ = await asyncio.gather(big, health())
    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert health_answered == [True]

    tags = {f"t{i}": "v" for i in range(10_000)}
    error = await attacker.refused(
        secured.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id="many-tags",
                config=config_pb2.Config(
                    name="many-tags", yaml_content="bundle: {name: x}\n", tags=tags
                ),
            ),
            metadata=B,
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    error = await attacker.refused(
        secured.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id="bomb", config=config_pb2.Config(name="bomb", yaml_content=bomb)
            ),
            metadata=B,
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    await _assert_a_is_intact(secured, victim, attacker)


NUL = "a\x00b"


def _new_config(config_id: str, **fields: Any) -> config_service_pb2.CreateConfigRequest:
    return config_service_pb2.CreateConfigRequest(
        config_id=config_id,
        request_id=fields.pop("request_id", ""),
        config=config_pb2.Config(name=config_id, yaml_content="bundle: {name: x}\n", **fields),
    )


def _bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in detail(error, error_details_pb2.BadRequest).field_violations]


async def test_nul_bytes_are_invalid_arguments_that_name_the_field(
    secured: Secured, victim: Victim
) -> None:
    attacker = Attacker(secured)
    configs, sessions = secured.configs, secured.sessions
    tries: list[tuple[str, Callable[..., Awaitable[Any]], Any]] = [
        ("config_id", configs.GetConfig, config_service_pb2.GetConfigRequest(config_id=NUL)),
        ("filter", configs.ListConfigs, config_service_pb2.ListConfigsRequest(filter=NUL)),
        ("request_id", configs.CreateConfig, _new_config("n1", request_id=NUL)),
        ("config.description", configs.CreateConfig, _new_config("n2", description=NUL)),
        ("config.tags", configs.CreateConfig, _new_config("n3", tags={"k": NUL})),
        ("session_id", sessions.GetSession, session_service_pb2.GetSessionRequest(session_id=NUL)),
        ("filter", sessions.ListSessions, session_service_pb2.ListSessionsRequest(filter=NUL)),
        (
            "tags",
            sessions.CreateSession,
            session_service_pb2.CreateSessionRequest(config_id="x", tags={NUL: "v"}),
        ),
        (
            "content",
            sessions.AppendMessage,
            session_service_pb2.AppendMessageRequest(
                session_id=victim.session_id,
                message=session_pb2.Message(role=session_pb2.ROLE_USER, content=NUL),
            ),
        ),
    ]
    for field, method, request in tries:
        error = await attacker.refused(method(request, metadata=B))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert any(field in named for named in _bad_fields(error)), (field, _bad_fields(error))
    await _assert_a_is_intact(secured, victim, attacker)


async def test_forged_page_and_bearer_tokens_are_refused(secured: Secured, victim: Victim) -> None:
    attacker = Attacker(secured)
    for index in range(3):
        await secured.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id=f"a-more-{index}",
                config=config_pb2.Config(
                    name=f"a-more-{index}", yaml_content="bundle: {name: x}\n"
                ),
            ),
            metadata=A,
        )
    first = await secured.configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(page_size=1), metadata=A
    )
    assert first.next_page_token
    forged = base64.urlsafe_b64encode(b'{"a":["a-config"],"s":"0000000000000000"}').decode()
    for token in (first.next_page_token, forged, "%%%", "A" * 5000, first.next_page_token[:-2]):
        error = await attacker.refused(
            secured.configs.ListConfigs(
                config_service_pb2.ListConfigsRequest(page_size=1, page_token=token), metadata=B
            )
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, token[:20]
        assert error_info(error).reason
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    claims = (
        base64.urlsafe_b64encode(b'{"sub":"x","tenant":"tenant-a","role":"admin","exp":9999999999}')
        .rstrip(b"=")
        .decode()
    )
    for bearer in (f"{header}.{claims}.", "tdm_a-admin_guess", secret("a-writer")[:-1]):
        error = await attacker.refused(
            secured.configs.GetConfig(
                config_service_pb2.GetConfigRequest(config_id="a-config"),
                metadata=(("authorization", f"Bearer {bearer}"),),
            )
        )
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    # B's own admin key cannot delete A's things, and its watch carries none of A's ids.
    error = await attacker.refused(
        secured.sessions.DeleteSession(
            session_service_pb2.DeleteSessionRequest(session_id=victim.session_id),
            metadata=B_ADMIN,
        )
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    await _assert_a_is_intact(secured, victim, attacker)
