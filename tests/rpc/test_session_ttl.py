"""Session lifetimes through real stubs: idle ttl, retention after the end, on both databases,
and two replicas sweeping one PostgreSQL database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from shared._generated.tandem.session.v1 import (
    session_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from tests.support.approvals import APPROVE, decide, document, echo, gated_session, until, write
from tests.support.configs import create_config
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.pair import Stack, running_pair, running_session_service
from tests.support.rpc import detail, rpc_error, seed_workspace
from tests.support.turns import collect, send

# Small lifetimes, and a sweeper that looks often, so the tests see sessions end quickly.
QUICK: dict[str, Any] = {"session_ttl_seconds": 0.3, "session_sweep_seconds": 0.2}
COMPLETED = session_pb2.SESSION_STATUS_COMPLETED


def seconds(value: float) -> duration_pb2.Duration:
    wire = duration_pb2.Duration()
    wire.FromTimedelta(timedelta(seconds=value))
    return wire


async def create(stack: Stack, **kwargs: object) -> session_pb2.Session:
    return await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app", start=True, **kwargs)  # type: ignore[arg-type]
    )


async def get(stack: Stack, session_id: str) -> session_pb2.Session:
    return await stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session_id)
    )


async def until_status(stack: Stack, session_id: str, status: int) -> session_pb2.Session:
    """The session once it has status (the test's timeout bounds the wait)."""
    while True:
        session = await get(stack, session_id)
        if session.status == status:
            return session
        await asyncio.sleep(0.05)


async def gone_code(stack: Stack, session_id: str) -> grpc.StatusCode | None:
    """The code GetSession fails with, or None while the session is still there."""
    try:
        await get(stack, session_id)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return None


async def until_gone(stack: Stack, session_id: str) -> grpc.StatusCode:
    """The code GetSession fails with once the session is gone (the test's timeout bounds it)."""
    while True:
        code = await gone_code(stack, session_id)
        if code is not None:
            return code
        await asyncio.sleep(0.05)


def version(session: session_pb2.Session) -> int:
    return int(session.etag.rsplit(":", 1)[1])


async def test_an_idle_session_is_completed_with_idle_timeout(database_url: str) -> None:
    async with running_pair(database_url, session=QUICK) as stack:
        await create_config(stack, "app", "bundle:\n  name: app\n")
        created = await create(stack)
        assert created.ttl.ToTimedelta() == timedelta(seconds=0.3)
        assert created.expire_time.ToDatetime() == (
            created.create_time.ToDatetime() + timedelta(seconds=0.3)
        )
        ended = await until_status(stack, created.session_id, COMPLETED)
    assert ended.completion_reason == "IDLE_TIMEOUT"
    assert not ended.HasField("expire_time")
    assert version(ended) == version(created) + 1


async def test_a_turn_pushes_the_deadline(database_url: str) -> None:
    async with running_pair(database_url, session=QUICK) as stack:
        await create_config(stack, "app", document(echo([{"reply": "Hello."}])))
        created = await create(stack, ttl=seconds(30))
        events = await collect(send(stack.sessions, created.session_id, "Hi"))
        after = await get(stack, created.session_id)
    assert events[-1].WhichOneof("event") == "turn_completed"
    assert after.status == session_pb2.SESSION_STATUS_ACTIVE
    assert after.expire_time.ToDatetime() > created.expire_time.ToDatetime()
    assert after.expire_time.ToDatetime() >= (
        events[-1].event_time.ToDatetime() + timedelta(seconds=30)
    )


async def test_a_waiting_turn_is_not_idle(database_url: str) -> None:
    async with running_pair(database_url, session=QUICK) as stack:
        text = document(echo([{"tool_calls": [write("note.txt", "x")]}, {"reply": "Done."}]))
        session_id = await gated_session(stack.configs, stack.sessions, text)
        call = send(stack.sessions, session_id, "Write the note")
        head = await until(call, "approval_requested")
        # Several ttls and sweeps pass while the turn waits for a person.
        await asyncio.sleep(1.5)
        waiting = await get(stack, session_id)
        assert waiting.status == session_pb2.SESSION_STATUS_ACTIVE
        assert waiting.active_turn_id == head[0].turn_id
        await decide(stack.sessions, session_id, head[-1].approval_requested.tool_call_id, APPROVE)
        rest = await collect(call)
        assert rest[-1].WhichOneof("event") == "turn_completed"
        # Once the turn ended, the session idles out after all.
        ended = await until_status(stack, session_id, COMPLETED)
    assert ended.completion_reason == "IDLE_TIMEOUT"


async def test_delete_after_removes_the_ended_session_and_its_workspace(
    database_url: str,
) -> None:
    async with running_pair(database_url, session=QUICK) as stack:
        await create_config(stack, "app", "bundle:\n  name: app\n")
        created = await create(stack, ttl=seconds(0), delete_after=seconds(0.3))
        assert not created.HasField("ttl")
        assert created.delete_after.ToTimedelta() == timedelta(seconds=0.3)
        folder: Path = seed_workspace(created.session_id, {"notes.txt": "kept a while"})
        ended = await stack.sessions.TerminateSession(
            session_service_pb2.TerminateSessionRequest(session_id=created.session_id)
        )
        assert ended.delete_time.ToDatetime() == (
            ended.update_time.ToDatetime() + timedelta(seconds=0.3)
        )
        gone = await until_gone(stack, created.session_id)
    assert gone == grpc.StatusCode.NOT_FOUND
    assert not await asyncio.to_thread(folder.exists)


async def test_a_ttl_over_the_maximum_is_refused_on_ttl(database_url: str) -> None:
    # Every tenant's ceiling, from the quota's setting (a key file may set it per tenant).
    async with running_pair(database_url, session={"quota_session_ttl_max_seconds": 60}) as stack:
        await create_config(stack, "app", "bundle:\n  name: app\n")
        error = await rpc_error(create(stack, ttl=seconds(61)))
        listed = await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = detail(error, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["ttl"]
    assert "60" in (error.details() or "") + violations[0].description
    assert list(listed.sessions) == []


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_two_replicas_complete_each_idle_session_once() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        async with (
            running_pair(url, session=QUICK) as stack,
            running_session_service(url, stack.config_app.server.address, **QUICK) as other,
            grpc.aio.insecure_channel(other.server.address) as channel,
        ):
            await create_config(stack, "app", "bundle:\n  name: app\n")
            # Every session runs out within the same instant, for both sweepers to race over.
            created = await asyncio.gather(*(create(stack, ttl=seconds(1)) for _ in range(30)))
            other_stub = session_service_pb2_grpc.SessionServiceStub(channel)
            ended = [await until_status(stack, c.session_id, COMPLETED) for c in created]
            # Read through the other replica too: both see the same, single completion.
            seen = [
                await other_stub.GetSession(
                    session_service_pb2.GetSessionRequest(session_id=c.session_id)
                )
                for c in created
            ]
    for before, after, there in zip(created, ended, seen, strict=True):
        assert after.completion_reason == "IDLE_TIMEOUT"
        # The sweep wrote each session once: had both replicas completed one, it would be
        # two versions on (and the second completion would have been refused anyway).
        assert version(after) == version(before) + 1
        assert there.etag == after.etag
