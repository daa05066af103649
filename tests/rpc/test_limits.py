"""Per-tenant quotas, the SendMessage rate limit and the server's RPC cap, through real stubs.

Every limit reached is RESOURCE_EXHAUSTED with ErrorInfo and QuotaFailure (and RetryInfo for
the rate), and never touches another tenant.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.rpc import detail, error_info
from tests.support.secured import KEYS, Secured, auth, key_file, secured_stack
from tests.support.slow_tool import with_slow_tool
from tests.support.turns import bundle, collect, next_event


async def outcome(call: Any) -> Any:
    """The response, or the refusal."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return error


def refusals(results: list[Any]) -> list[grpc.aio.AioRpcError]:
    return [r for r in results if isinstance(r, grpc.aio.AioRpcError)]


def assert_quota(error: grpc.aio.AioRpcError, tenant: str, quota: str, limit: int) -> None:
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    info = error_info(error)
    assert info.reason == "QUOTA_EXCEEDED"
    assert info.metadata["quota"] == quota
    assert info.metadata["limit"] == str(limit)
    [violation] = detail(error, error_details_pb2.QuotaFailure).violations
    assert violation.subject == f"tenant:{tenant}"
    assert violation.description.startswith(f"{quota}: ")


def create_config(stack: Secured, who: str, config_id: str, document: str = "") -> Any:
    return stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=config_id,
            config=config_pb2.Config(name=config_id, yaml_content=document or bundle({})),
        ),
        metadata=auth(who),
    )


async def session_of(stack: Secured, who: str, config_id: str) -> str:
    created = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=config_id, start=True),
        metadata=auth(who),
    )
    return str(created.session_id)


def send(stack: Secured, who: str, session_id: str, content: str = "hi") -> Any:
    return stack.sessions.SendMessage(
        session_service_pb2.SendMessageRequest(session_id=session_id, content=content),
        metadata=auth(who),
    )


async def test_concurrent_creates_stop_exactly_at_the_config_quota(
    database_url: str, tmp_path: Path
) -> None:
    tenants = {"tenant-a": {"quotas": {"configs": 3}}}
    async with secured_stack(database_url, tmp_path, tenants=tenants) as stack:
        results = await asyncio.gather(
            *(outcome(create_config(stack, "a-writer", f"c{n}")) for n in range(8))
        )
        refused = refusals(results)
        assert len(refused) == 5
        for error in refused:
            assert_quota(error, "tenant-a", "configs", 3)
        listed = await stack.configs.ListConfigs(
            config_service_pb2.ListConfigsRequest(), metadata=auth("a-reader")
        )
        assert len(listed.configs) == 3
        # Another tenant is not held back by tenant-a's quota.
        for n in range(5):
            await create_config(stack, "b-writer", f"c{n}")
        # Deleting frees a place.
        victim = listed.configs[0]
        await stack.configs.DeleteConfig(
            config_service_pb2.DeleteConfigRequest(config_id=victim.config_id, etag=victim.etag),
            metadata=auth("a-admin"),
        )
        created = await create_config(stack, "a-writer", "after-delete")
        assert created.config_id == "after-delete"


async def test_concurrent_creates_stop_exactly_at_the_session_quota(
    database_url: str, tmp_path: Path
) -> None:
    tenants = {"tenant-a": {"quotas": {"sessions": 2}}}
    async with secured_stack(database_url, tmp_path, tenants=tenants) as stack:
        await create_config(stack, "a-writer", "agent")
        results = await asyncio.gather(
            *(outcome(session_of(stack, "a-writer", "agent")) for _ in range(6))
        )
        refused = refusals(results)
        assert len(refused) == 4
        for error in refused:
            assert_quota(error, "tenant-a", "sessions", 2)
        kept = [r for r in results if isinstance(r, str)]
        await stack.sessions.DeleteSession(
            session_service_pb2.DeleteSessionRequest(session_id=kept[0]), metadata=auth("a-admin")
        )
        assert await session_of(stack, "a-writer", "agent")


async def test_a_tenant_runs_at_most_its_concurrent_turns(
    database_url: str, tmp_path: Path
) -> None:
    tenants = {"tenant-a": {"quotas": {"concurrent_turns": 1}}}
    async with secured_stack(database_url, tmp_path, tenants=tenants) as stack:
        await create_config(stack, "a-writer", "slow", bundle({"script": [{"stall": True}]}))
        await create_config(stack, "b-writer", "slow", bundle({"script": [{"stall": True}]}))
        first = await session_of(stack, "a-writer", "slow")
        second = await session_of(stack, "a-writer", "slow")
        running = send(stack, "a-writer", first)
        started = await next_event(running)
        assert started.HasField("turn_started")
        refused = await outcome(collect(send(stack, "a-writer", second)))
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert_quota(refused, "tenant-a", "concurrent_turns", 1)
        # Tenant-b's turn is not counted against tenant-a's, nor held back by it.
        other = send(stack, "b-writer", await session_of(stack, "b-writer", "slow"))
        assert (await next_event(other)).HasField("turn_started")
        other.cancel()
        # Once the running turn ends, the next one is admitted.
        await stack.sessions.CancelTurn(
            session_service_pb2.CancelTurnRequest(session_id=first), metadata=auth("a-writer")
        )
        events = await collect(running)
        assert events[-1].HasField("turn_cancelled")
        admitted = send(stack, "a-writer", second)
        assert (await next_event(admitted)).HasField("turn_started")
        admitted.cancel()


async def test_send_message_is_rate_limited_per_tenant_with_a_retry_delay(
    database_url: str, tmp_path: Path
) -> None:
    quotas = {"send_messages_per_minute": 60, "send_message_burst": 2}
    async with secured_stack(database_url, tmp_path, tenants={"tenant-a": {"quotas": quotas}}) as (
        stack
    ):
        await create_config(stack, "a-writer", "echo")
        await create_config(stack, "b-writer", "echo")
        sessions = [await session_of(stack, "a-writer", "echo") for _ in range(3)]
        for session_id in sessions[:2]:
            events = await collect(send(stack, "a-writer", session_id))
            assert events[-1].HasField("turn_completed")
        refused = await outcome(collect(send(stack, "a-writer", sessions[2])))
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(refused)
        assert info.reason == "RATE_LIMITED"
        assert info.metadata["quota"] == "send_messages_per_minute"
        [violation] = detail(refused, error_details_pb2.QuotaFailure).violations
        assert violation.subject == "tenant:tenant-a"
        delay = (
            detail(refused, error_details_pb2.RetryInfo).retry_delay.ToTimedelta().total_seconds()
        )
        # One message a second: the next token is less than a second away.
        assert 0 < delay <= 1.0
        # Tenant-b is not limited by tenant-a's rate.
        b_session = await session_of(stack, "b-writer", "echo")
        assert (await collect(send(stack, "b-writer", b_session)))[-1].HasField("turn_completed")
        # After the advertised delay the same call goes through.
        await asyncio.sleep(delay + 0.05)
        events = await collect(send(stack, "a-writer", sessions[2]))
        assert events[-1].HasField("turn_completed")


async def test_quota_changes_in_the_key_file_apply_without_a_restart(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with secured_stack(
        sqlite_url, tmp_path, tenants={"tenant-a": {"quotas": {"configs": 1}}}
    ) as stack:
        await create_config(stack, "a-writer", "one")
        refused = await outcome(create_config(stack, "a-writer", "two"))
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert_quota(refused, "tenant-a", "configs", 1)
        key_file(stack.keys, KEYS, tenants={"tenant-a": {"quotas": {"configs": 2}}})
        await asyncio.sleep(0.2)
        assert (await create_config(stack, "a-writer", "two")).config_id == "two"


async def test_the_server_refuses_rpcs_beyond_its_concurrency_cap(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with secured_stack(sqlite_url, tmp_path, maximum_concurrent_rpcs=3) as stack:
        # SessionService's own watch holds one of ConfigService's three places.
        watches = [
            stack.configs.WatchConfigs(
                config_service_pb2.WatchConfigsRequest(), metadata=auth("a-reader")
            )
            for _ in range(2)
        ]
        for watch in watches:
            await asyncio.wait_for(watch.wait_for_connection(), 5)

        async def refused_call() -> grpc.aio.AioRpcError:
            while True:
                result = await outcome(
                    stack.configs.ListConfigs(
                        config_service_pb2.ListConfigsRequest(), metadata=auth("a-reader")
                    )
                )
                if isinstance(result, grpc.aio.AioRpcError):
                    return result
                await asyncio.sleep(0.05)

        # The timeout only fails a server that keeps serving a fourth concurrent RPC.
        refused = await asyncio.wait_for(refused_call(), 30)
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # A place frees as soon as a stream ends.
        watches[0].cancel()
        await asyncio.sleep(0.2)
        listed = await stack.configs.ListConfigs(
            config_service_pb2.ListConfigsRequest(), metadata=auth("a-reader")
        )
        assert list(listed.configs) == []
        watches[1].cancel()


# The second tool would take an hour: the turn completes only if the call is cut off.
@pytest.mark.parametrize(
    ("seconds", "limit", "result"), [(0.1, 5, "waited 0.1s"), (3600, 0.3, None)]
)
async def test_a_tool_call_is_cut_off_at_its_timeout(
    sqlite_url: str, tmp_path: Path, seconds: float, limit: float, result: str | None
) -> None:
    document = bundle(
        {"script": [{"tool_calls": [{"name": "wait", "arguments": {}}]}, {"reply": "Done."}]},
        tools=[{"module": "tool-slow", "config": {"seconds": seconds}}],
        orchestrator={"module": "loop-streaming", "config": {"tool_timeout_seconds": limit}},
    )
    async with secured_stack(sqlite_url, tmp_path, modules=with_slow_tool()) as stack:
        await create_config(stack, "a-writer", "tools", document)
        session_id = await session_of(stack, "a-writer", "tools")
        events = await collect(send(stack, "a-writer", session_id))
        [completed] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
        assert events[-1].HasField("turn_completed")
        if result is not None:
            assert (completed.is_error, completed.result) == (False, result)
            return
        assert completed.is_error
        assert completed.result == "wait did not finish within 0.3s."
        # The turn went on without the tool.
        assert events[-1].turn_completed.message.content == "Done."


@pytest.mark.parametrize("opted_in", [False, True])
async def test_literal_secrets_are_refused_unless_the_tenant_opts_in(
    sqlite_url: str, tmp_path: Path, opted_in: bool
) -> None:
    tenants = {"tenant-a": {"allow_literal_secrets": opted_in}}
    literal = "sk-ant-api03-" + "Q7x9" * 8
    document = bundle({"api_key": literal})
    async with secured_stack(sqlite_url, tmp_path, tenants=tenants) as stack:
        validated = await stack.configs.ValidateConfig(
            config_service_pb2.ValidateConfigRequest(yaml_content=document),
            metadata=auth("a-reader"),
        )
        [found] = validated.violations
        assert found.field == "providers[0].config.api_key"
        assert found.line > 0
        assert literal not in found.message
        created = await outcome(create_config(stack, "a-writer", "literal", document))
        if opted_in:
            assert validated.valid
            assert found.severity == config_pb2.SEVERITY_WARNING
            assert created.config_id == "literal"
            return
        assert not validated.valid
        assert found.severity == config_pb2.SEVERITY_ERROR
        assert isinstance(created, grpc.aio.AioRpcError)
        assert created.code() is grpc.StatusCode.INVALID_ARGUMENT
        [violation] = detail(created, error_details_pb2.BadRequest).field_violations
        assert violation.field == "config.yaml_content.providers[0].config.api_key"
        assert "not allowed for this tenant" in violation.description
        assert literal not in violation.description
        assert literal not in str(created.details())
        # The `${VAR}` form is the normal path and is accepted.
        referenced = bundle({"api_key": "${ANTHROPIC_API_KEY}"})
        assert (await create_config(stack, "a-writer", "ref", referenced)).config_id == "ref"
