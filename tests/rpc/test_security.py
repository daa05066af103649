"""Authentication, roles and tenant isolation through real servers and stubs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
)
from shared._generated.tandem.session.v1 import (
    session_pb2,
    session_service_pb2,
)
from tests.support.jwks import AUDIENCE, ISSUER, new_rsa, public_jwk, sign, write_jwks
from tests.support.rpc import error_info
from tests.support.secured import KEYS, Secured, auth, key_file, secured_stack
from tests.support.turns import bundle, collect


@pytest.fixture
async def secured(database_url: str, tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_stack(database_url, tmp_path) as stack:
        yield stack


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def create_config(secured: Secured, who: str, config_id: str, document: str = "") -> Any:
    return await secured.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=config_id,
            config=config_pb2.Config(name=config_id, yaml_content=document or bundle({})),
        ),
        metadata=auth(who),
    )


async def test_missing_malformed_unknown_and_revoked_keys_are_unauthenticated(
    secured: Secured,
) -> None:
    get = config_service_pb2.GetConfigRequest(config_id="x")
    cases: list[tuple[Any, str]] = [
        (None, "CREDENTIALS_MISSING"),
        ((("authorization", "Basic abc"),), "MALFORMED_CREDENTIALS"),
        ((("authorization", "Bearer not-a-key"),), "CREDENTIALS_INVALID"),
    ]
    for metadata, reason in cases:
        error = await refused(secured.configs.GetConfig(get, metadata=metadata))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert error_info(error).reason == reason
        session_error = await refused(
            secured.sessions.ListSessions(
                session_service_pb2.ListSessionsRequest(), metadata=metadata
            )
        )
        assert session_error.code() is grpc.StatusCode.UNAUTHENTICATED
    key_file(secured.keys, KEYS, revoked=frozenset({"a-reader"}))
    await asyncio.sleep(0.2)
    error = await refused(secured.configs.GetConfig(get, metadata=auth("a-reader")))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "CREDENTIALS_INVALID"
    # A still-valid key of the same tenant is unaffected.
    missing = await refused(secured.configs.GetConfig(get, metadata=auth("a-writer")))
    assert missing.code() is grpc.StatusCode.NOT_FOUND


async def test_health_and_reflection_stay_open(secured: Secured) -> None:
    async with grpc.aio.insecure_channel(secured.config_app.server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(
            health_pb2.HealthCheckRequest(service="tandem.config.v1.ConfigService")
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_rotated_key_works_at_once_and_the_old_one_stops_without_a_restart(
    secured: Secured,
) -> None:
    await create_config(secured, "a-writer", "rotating")
    get = config_service_pb2.GetConfigRequest(config_id="rotating")
    rotated = {k: v for k, v in KEYS.items() if k != "a-writer"} | {
        "a-writer-2": ("tenant-a", "writer")
    }
    key_file(secured.keys, rotated)
    await asyncio.sleep(0.2)
    found = await secured.configs.GetConfig(get, metadata=auth("a-writer-2"))
    assert found.config_id == "rotating"
    error = await refused(secured.configs.GetConfig(get, metadata=auth("a-writer")))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    # A broken file keeps the last good list instead of locking everyone out.
    secured.keys.write_text("keys: [ {name: broken")
    await asyncio.sleep(0.2)
    again = await secured.configs.GetConfig(get, metadata=auth("a-writer-2"))
    assert again.config_id == "rotating"


async def test_reader_writer_and_admin_each_get_what_their_role_allows(secured: Secured) -> None:
    document = bundle({})
    create = config_service_pb2.CreateConfigRequest(
        config_id="roles", config=config_pb2.Config(name="roles", yaml_content=document)
    )
    denied = await refused(secured.configs.CreateConfig(create, metadata=auth("a-reader")))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied).reason == "ROLE_NOT_ALLOWED"
    assert error_info(denied).metadata["needed"] == "writer"
    created = await secured.configs.CreateConfig(create, metadata=auth("a-writer"))
    # Readers read.
    listed = await secured.configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(), metadata=auth("a-reader")
    )
    assert [c.config_id for c in listed.configs] == ["roles"]
    # Sessions: writers run them; readers only look.
    # Shared with the tenant: a new session is its creator's own (PRIVATE) unless asked.
    session = await secured.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(
            config_id="roles", start=True, visibility=config_pb2.VISIBILITY_ORG
        ),
        metadata=auth("a-writer"),
    )
    send = session_service_pb2.SendMessageRequest(session_id=session.session_id, content="hi")
    reader_send = await refused(
        collect(secured.sessions.SendMessage(send, metadata=auth("a-reader")))
    )
    assert reader_send.code() is grpc.StatusCode.PERMISSION_DENIED
    events = await collect(secured.sessions.SendMessage(send, metadata=auth("a-writer")))
    assert events[-1].HasField("turn_completed")
    await secured.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session.session_id),
        metadata=auth("a-reader"),
    )
    # Deleting is for admins.
    delete_session = session_service_pb2.DeleteSessionRequest(session_id=session.session_id)
    error = await refused(secured.sessions.DeleteSession(delete_session, metadata=auth("a-writer")))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    await secured.sessions.DeleteSession(delete_session, metadata=auth("a-admin"))
    delete = config_service_pb2.DeleteConfigRequest(config_id="roles", etag=created.etag)
    error = await refused(secured.configs.DeleteConfig(delete, metadata=auth("a-writer")))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    await secured.configs.DeleteConfig(delete, metadata=auth("a-admin"))


async def test_the_service_key_only_follows_changes(secured: Secured) -> None:
    await create_config(secured, "a-writer", "private")
    error = await refused(
        secured.configs.GetConfig(
            config_service_pb2.GetConfigRequest(config_id="private"),
            metadata=auth("session-service"),
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    error = await refused(
        secured.sessions.ListSessions(
            session_service_pb2.ListSessionsRequest(), metadata=auth("session-service")
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_tenant_b_can_touch_nothing_of_tenant_a(secured: Secured) -> None:
    configs, sessions = secured.configs, secured.sessions
    a_config = await create_config(secured, "a-writer", "a-config")
    a_session = await sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(
            config_id="a-config", start=True, visibility=config_pb2.VISIBILITY_ORG
        ),
        metadata=auth("a-writer"),
    )
    first = await collect(
        sessions.SendMessage(
            session_service_pb2.SendMessageRequest(
                session_id=a_session.session_id, content="secret plans"
            ),
            metadata=auth("a-writer"),
        )
    )
    b = auth("b-admin")
    config_id, session_id = a_config.config_id, a_session.session_id

    # B's watch, opened now, must never carry A's changes.
    watch = configs.WatchConfigs(config_service_pb2.WatchConfigsRequest(), metadata=b)
    await watch.initial_metadata()

    tries: list[Callable[[], Awaitable[Any]]] = [
        lambda: configs.GetConfig(
            config_service_pb2.GetConfigRequest(config_id=config_id), metadata=b
        ),
        lambda: configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id=config_id, name="x", yaml_content=bundle({}))
            ),
            metadata=b,
        ),
        lambda: configs.DeleteConfig(
            config_service_pb2.DeleteConfigRequest(config_id=config_id), metadata=b
        ),
        lambda: configs.ListConfigRevisions(
            config_service_pb2.ListConfigRevisionsRequest(config_id=config_id), metadata=b
        ),
        lambda: configs.RollbackConfig(
            config_service_pb2.RollbackConfigRequest(config_id=config_id, revision=1), metadata=b
        ),
        lambda: configs.AddTool(
            config_service_pb2.AddToolRequest(config_id=config_id, module="tool-filesystem"),
            metadata=b,
        ),
        lambda: sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id=config_id), metadata=b
        ),
        lambda: sessions.PrepareConfig(
            session_service_pb2.PrepareConfigRequest(config_id=config_id), metadata=b
        ),
        lambda: sessions.GetSession(
            session_service_pb2.GetSessionRequest(session_id=session_id), metadata=b
        ),
        lambda: sessions.TerminateSession(
            session_service_pb2.TerminateSessionRequest(session_id=session_id), metadata=b
        ),
        lambda: sessions.DeleteSession(
            session_service_pb2.DeleteSessionRequest(session_id=session_id), metadata=b
        ),
        lambda: sessions.ListMessages(
            session_service_pb2.ListMessagesRequest(session_id=session_id), metadata=b
        ),
        lambda: sessions.AppendMessage(
            session_service_pb2.AppendMessageRequest(
                session_id=session_id,
                message=session_pb2.Message(role=session_pb2.ROLE_SYSTEM, content="note"),
            ),
            metadata=b,
        ),
        lambda: collect(
            sessions.SendMessage(
                session_service_pb2.SendMessageRequest(session_id=session_id, content="hi"),
                metadata=b,
            )
        ),
        lambda: collect(
            sessions.StreamEvents(
                session_service_pb2.StreamEventsRequest(session_id=session_id), metadata=b
            )
        ),
        lambda: sessions.CancelTurn(
            session_service_pb2.CancelTurnRequest(session_id=session_id, turn_id=first[0].turn_id),
            metadata=b,
        ),
    ]
    for index, attempt in enumerate(tries):
        error = await refused(attempt())
        assert error.code() is grpc.StatusCode.NOT_FOUND, (index, error)

    listed = await configs.ListConfigs(config_service_pb2.ListConfigsRequest(), metadata=b)
    assert list(listed.configs) == []
    assert listed.total_size == 0
    b_sessions = await sessions.ListSessions(session_service_pb2.ListSessionsRequest(), metadata=b)
    assert list(b_sessions.sessions) == []

    # Includes resolve within the tenant: B cannot include A's config by name.
    includer = (
        "---\n"
        + json.dumps(
            {
                "bundle": {"name": "b-inc"},
                "includes": [{"bundle": "a-config"}],
                "session": {"orchestrator": "loop-basic", "context": "context-simple"},
                "providers": [{"module": "provider-echo"}],
            }
        )
        + "\n---\nhi\n"
    )
    await create_config(secured, "b-writer", "b-inc", includer)
    error = await refused(
        sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id="b-inc"), metadata=b
        )
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "a-config" in str(error.details())

    # The same id in both tenants names two different configs.
    b_own = await create_config(secured, "b-writer", "a-config")
    assert b_own.config_id == "a-config"
    a_view = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id="a-config"), metadata=auth("a-reader")
    )
    assert a_view.etag == a_config.etag

    # B's watch saw B's own changes only.
    seen: list[tuple[str, int]] = []
    while len(seen) < 2:
        change = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(change, config_pb2.ConfigChange)
        seen.append((change.config_id, change.revision))
    watch.cancel()
    assert seen == [("b-inc", 1), ("a-config", 1)]

    # A's session and transcript are intact.
    transcript = await sessions.ListMessages(
        session_service_pb2.ListMessagesRequest(session_id=session_id),
        metadata=auth("a-reader"),
    )
    assert transcript.messages[0].content == "secret plans"


async def test_jwts_from_an_identity_provider_authenticate_next_to_api_keys(
    database_url: str, tmp_path: Path
) -> None:
    signing = new_rsa()
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, public_jwk(signing, "idp-1"))
    settings: dict[str, Any] = {
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_jwks_file": str(jwks),
    }
    async with secured_stack(database_url, tmp_path, **settings) as stack:

        def bearer(token: str) -> tuple[tuple[str, str]]:
            return (("authorization", f"Bearer {token}"),)

        writer = sign(signing, "idp-1", tenant="tenant-a", role="writer")
        created = await stack.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id="from-jwt",
                config=config_pb2.Config(name="from-jwt", yaml_content=bundle({})),
            ),
            metadata=bearer(writer),
        )
        # The token's tenant is the API keys' tenant-a: one tenant, whichever credential.
        found = await stack.configs.GetConfig(
            config_service_pb2.GetConfigRequest(config_id=created.config_id),
            metadata=auth("a-reader"),
        )
        assert found.config_id == "from-jwt"
        # SessionService passes the caller's token on to ConfigService.
        session = await stack.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id="from-jwt", start=True),
            metadata=bearer(writer),
        )
        events = await collect(
            stack.sessions.SendMessage(
                session_service_pb2.SendMessageRequest(
                    session_id=session.session_id, content="hello"
                ),
                metadata=bearer(writer),
            )
        )
        assert events[-1].HasField("turn_completed")
        other = sign(signing, "idp-1", tenant="tenant-b", role="admin")
        hidden = await refused(
            stack.configs.GetConfig(
                config_service_pb2.GetConfigRequest(config_id="from-jwt"), metadata=bearer(other)
            )
        )
        assert hidden.code() is grpc.StatusCode.NOT_FOUND
        reader = sign(signing, "idp-1", tenant="tenant-a", role="reader")
        denied = await refused(
            stack.configs.DeleteConfig(
                config_service_pb2.DeleteConfigRequest(config_id="from-jwt"),
                metadata=bearer(reader),
            )
        )
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        get = config_service_pb2.GetConfigRequest(config_id="from-jwt")
        cases = {
            "TOKEN_EXPIRED": sign(signing, "idp-1", tenant="tenant-a", exp=1),
            "TOKEN_INVALID": sign(new_rsa(), "idp-1", tenant="tenant-a"),
            "TOKEN_KEY_UNKNOWN": sign(signing, "other", tenant="tenant-a"),
        }
        for reason, token in cases.items():
            error = await refused(stack.configs.GetConfig(get, metadata=bearer(token)))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert error_info(error).reason == reason
            assert token not in str(error.details())
        wrong_audience = sign(signing, "idp-1", tenant="tenant-a", aud="someone-else")
        error = await refused(stack.configs.GetConfig(get, metadata=bearer(wrong_audience)))
        assert error_info(error).reason == "TOKEN_INVALID"
