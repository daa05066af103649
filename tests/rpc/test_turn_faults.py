"""Turns under database faults: a PostgreSQL restart, text PostgreSQL refuses, a refused write.

The restart uses a PostgreSQL cluster the test starts itself, so it can restart it.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.app import ServiceApp
from shared.db.engine import sync_url
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.pair import Stack, running_config_service, running_session_service
from tests.support.pg_cluster import pg_cluster
from tests.support.processes import deployment
from tests.support.rpc import seed_workspace
from tests.support.turns import (
    Event,
    active_session,
    assert_gap_free,
    bundle,
    collect,
    get_session,
    kinds,
    next_event,
    send,
    text_of,
    transcript,
)


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler ("Task exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        gc.collect()  # a dead task reports its unretrieved exception when collected
        loop.set_exception_handler(previous)


@asynccontextmanager
async def replicas(
    database_url: str, config_url: str, count: int, **session: Any
) -> AsyncIterator[tuple[ServiceApp, list[session_service_pb2_grpc.SessionServiceAsyncStub]]]:
    """ConfigService on its own database, and count SessionService replicas on database_url."""
    async with AsyncExitStack() as stack:
        configs = await stack.enter_async_context(running_config_service(config_url))
        stubs = []
        for _ in range(count):
            app = await stack.enter_async_context(
                running_session_service(database_url, configs.server.address, **session)
            )
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(app.server.address))
            stubs.append(session_service_pb2_grpc.SessionServiceStub(channel))
        yield configs, stubs


async def create_config(configs: ServiceApp, config_id: str, document: str) -> None:
    async with grpc.aio.insecure_channel(configs.server.address) as channel:
        await config_service_pb2_grpc.ConfigServiceStub(channel).CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id=config_id,
                config=config_pb2.Config(name=config_id, yaml_content=document),
            )
        )


def follow(stub: session_service_pb2_grpc.SessionServiceAsyncStub, session_id: str) -> Any:
    """Follows the session's log from the start until no turn runs."""
    return stub.StreamEvents(session_service_pb2.StreamEventsRequest(session_id=session_id))


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_running_turns_survive_a_postgresql_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reply = " ".join(f"w{n}" for n in range(40))
    with pg_cluster() as cluster, loop_errors() as errors:
        async with replicas(
            cluster.url, f"sqlite:///{tmp_path / 'configs.db'}", 2, turn_lease_seconds=3.0
        ) as (configs, (runs, watches)):
            await create_config(configs, "slow", bundle({"reply": reply, "delay_ms": 60}))
            sessions = [
                (
                    await runs.CreateSession(
                        session_service_pb2.CreateSessionRequest(config_id="slow", start=True)
                    )
                ).session_id
                for _ in range(4)
            ]
            calls = [send(runs, s, "go") for s in sessions]
            heads = [[await next_event(call)] for call in calls]
            # Followers on the replica that runs the turns and on the other one.
            followers = [(follow(runs, s), follow(watches, s)) for s in sessions]
            for here, there in followers:
                await next_event(here)
                await next_event(there)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.restart, "immediate")
            results = await asyncio.gather(*(collect(call, within=40) for call in calls))
            logs = await asyncio.gather(
                *(collect(f, within=40) for pair in followers for f in pair)
            )
            for head, rest in zip(heads, results, strict=True):
                events = [*head, *rest]
                assert kinds(events)[-1] == "turn_completed", kinds(events)[-3:]
                assert text_of(events) == reply
                assert_gap_free(events)
            for log in logs:
                assert kinds(log)[-1] == "turn_completed"
                assert text_of(log) == reply
                assert_gap_free(log)
            for session_id in sessions:
                state = await runs.GetSession(
                    session_service_pb2.GetSessionRequest(session_id=session_id)
                )
                assert state.active_turn_id == ""
    assert errors == []
    assert "never retrieved" not in caplog.text
    assert "TURN_ABANDONED" not in caplog.text


async def test_text_with_nul_characters_is_stored_and_the_turn_completes(stack: Stack) -> None:
    script = [
        {
            "thinking": "let me\u0000think",
            "reply": "",
            "tool_calls": [{"name": "read_file", "arguments": {"path": "blob.txt"}}],
        },
        {"reply": "bin\u0000ary reply"},
    ]
    session_id = await active_session(
        stack, bundle({"script": script}, tools=[{"module": "tool-filesystem"}])
    )
    seed_workspace(session_id, {"blob.txt": "head\x00tail"})
    events = await collect(send(stack.sessions, session_id, "go"))
    assert kinds(events)[-1] == "turn_completed"
    assert_gap_free(events)
    # One rule on both databases: U+0000 becomes U+FFFD, in events and in the transcript.
    [result] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert (result.result, result.is_error) == ("head\ufffdtail", False)
    assert text_of(events) == "bin\ufffdary reply"
    thinking = "".join(e.thinking_delta.text for e in events if e.HasField("thinking_delta"))
    assert thinking == "let me\ufffdthink"
    stored = await collect(
        stack.sessions.StreamEvents(session_service_pb2.StreamEventsRequest(session_id=session_id))
    )
    assert [e.SerializeToString() for e in stored] == [e.SerializeToString() for e in events]
    messages = await transcript(stack, session_id)
    assert [m.content for m in messages[-2:]] == ["head\ufffdtail", "bin\ufffdary reply"]
    assert (await get_session(stack, session_id)).active_turn_id == ""


def refuse_events_mentioning(database_url: str, word: str) -> None:
    """A trigger that makes the database refuse, for good, any event whose payload has word."""
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(
                    text(
                        "CREATE FUNCTION refuse_event() RETURNS trigger AS $$ BEGIN "
                        f"IF NEW.payload::text LIKE '%{word}%' THEN "
                        "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; "
                        "END $$ LANGUAGE plpgsql"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse_event BEFORE INSERT ON session_events "
                        "FOR EACH ROW EXECUTE FUNCTION refuse_event()"
                    )
                )
            else:
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse_event BEFORE INSERT ON session_events "
                        f"WHEN NEW.payload LIKE '%{word}%' "
                        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                    )
                )
    finally:
        engine.dispose()


async def test_a_write_the_database_refuses_fails_the_turn_with_a_stored_final_event(
    stack: Stack, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = await active_session(
        stack, bundle({"reply": "fine so far, then poison arrives", "delay_ms": 5})
    )
    refuse_events_mentioning(database_url, "poison")
    with loop_errors() as errors:
        events = await collect(send(stack.sessions, session_id, "go"), within=20)
        assert kinds(events)[-1] == "turn_failed"
        assert events[-1].turn_failed.code == "EVENT_NOT_STORED"
        assert "poison" not in events[-1].turn_failed.message
        assert_gap_free(events)
        stored: list[Event] = await collect(
            stack.sessions.StreamEvents(
                session_service_pb2.StreamEventsRequest(session_id=session_id)
            )
        )
        assert [e.SerializeToString() for e in stored] == [e.SerializeToString() for e in events]
        assert (await get_session(stack, session_id)).active_turn_id == ""
        # The session is not wedged: it takes the next turn.
        again = await collect(send(stack.sessions, session_id, "again"))
        assert kinds(again)[-1] == "turn_failed"
        assert again[0].sequence == events[-1].sequence + 1
    assert errors == []
    assert "never retrieved" not in caplog.text


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_a_turn_failed_while_its_replica_was_frozen_stops_without_writing() -> None:
    require_postgres()
    lease = 1.5
    with fresh_postgres_database() as url:
        env = {"TANDEM_TURN_LEASE_SECONDS": str(lease)}
        async with deployment(url, session_env=env) as tandem:
            frozen, awake = tandem.sessions
            reply = " ".join(f"w{n}" for n in range(60))
            await tandem.configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="slow",
                    config=config_pb2.Config(
                        name="slow", yaml_content=bundle({"reply": reply, "delay_ms": 50})
                    ),
                )
            )
            created = await frozen.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="slow", start=True)
            )
            session_id = created.session_id
            call = send(frozen, session_id, "go")
            head = [await next_event(call) for _ in range(3)]
            follower = awake.StreamEvents(
                session_service_pb2.StreamEventsRequest(
                    session_id=session_id, after_sequence=head[-1].sequence
                )
            )
            process = tandem.replicas[0].process
            process.send_signal(signal.SIGSTOP)
            try:
                # The other replica's follower sees the lease run out and fails the turn.
                rest = await collect(follower, within=lease + 5)
            finally:
                process.send_signal(signal.SIGCONT)
            call.cancel()
            assert kinds(rest)[-1] == "turn_failed"
            assert rest[-1].turn_failed.code == "TURN_ABANDONED"
            # Thawed, the turn finds it was failed and stops: nothing after the final event.
            await asyncio.sleep(2)
            log = await collect(
                awake.StreamEvents(session_service_pb2.StreamEventsRequest(session_id=session_id))
            )
            assert_gap_free(log)
            assert log[-1].sequence == rest[-1].sequence
            assert kinds(log).count("turn_failed") == 1
            again = await collect(send(awake, session_id, "again"), within=30)
            assert kinds(again)[-1] == "turn_completed"
            assert again[0].sequence == log[-1].sequence + 1
            written = "".join(tandem.replicas[0].log)
            assert "was failed as abandoned" in written
            for sign in ("IntegrityError", "UniqueViolation", "Traceback", "never retrieved"):
                assert sign not in written
