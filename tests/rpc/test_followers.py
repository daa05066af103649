"""Followers of session event logs: final events for orphaned turns, and what following costs.

Costs are counted in SQL statements, seen through the one hook every engine offers
(`Telemetry.instrument_engine`), never timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from session_service.app import SessionServiceApp
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.telemetry.setup import Telemetry
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.pair import running_config_service, running_session_service
from tests.support.processes import deployment
from tests.support.turns import (
    Event,
    assert_gap_free,
    bundle,
    collect,
    kinds,
    next_event,
    send,
    text_of,
)

if TYPE_CHECKING:
    SessionStub = session_service_pb2_grpc.SessionServiceAsyncStub


@dataclass
class StatementCounter(Telemetry):
    """Telemetry that records nothing, but sees every SQL statement of its service's engine."""

    statements: list[str] = field(default_factory=list)

    def instrument_engine(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)

    def event_reads(self, since: int = 0) -> int:
        """SELECTs on the event log among the statements from index since on."""
        return sum(
            1
            for s in self.statements[since:]
            if s.lstrip().upper().startswith("SELECT") and "FROM session_events" in s
        )

    async def quiet(self, seconds: float = 0.3, within: float = 10) -> int:
        """Waits until no statement has run for seconds; the count then."""
        deadline = time.monotonic() + within
        while True:
            before = len(self.statements)
            await asyncio.sleep(seconds)
            if len(self.statements) == before or time.monotonic() > deadline:
                return len(self.statements)


@dataclass
class Replica:
    """One in-process SessionService, its stub and its statement counter."""

    app: SessionServiceApp
    stub: SessionStub
    sql: StatementCounter


@asynccontextmanager
async def counted_replicas(
    database_url: str, count: int, **session: Any
) -> AsyncIterator[tuple[config_service_pb2_grpc.ConfigServiceAsyncStub, list[Replica]]]:
    """ConfigService and count SessionService replicas on one database, statements counted."""
    async with AsyncExitStack() as stack:
        configs = await stack.enter_async_context(running_config_service(database_url))
        config_channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(configs.server.address)
        )
        replicas = []
        for _ in range(count):
            counter = StatementCounter()
            app = await stack.enter_async_context(
                running_session_service(
                    database_url,
                    configs.server.address,
                    telemetry=counter,
                    quota_concurrent_turns=0,
                    quota_send_messages_per_minute=0,
                    **session,
                )
            )
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(app.server.address))
            replicas.append(
                Replica(app, session_service_pb2_grpc.SessionServiceStub(channel), counter)
            )
        yield config_service_pb2_grpc.ConfigServiceStub(config_channel), replicas


async def started_session(
    configs: config_service_pb2_grpc.ConfigServiceAsyncStub, stub: SessionStub, document: str
) -> str:
    await configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="follow", config=config_pb2.Config(name="follow", yaml_content=document)
        )
    )
    created = await stub.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="follow", start=True)
    )
    return str(created.session_id)


def following(stub: SessionStub, session_id: str, *, follow: bool = True, after: int = 0) -> Any:
    return stub.StreamEvents(
        session_service_pb2.StreamEventsRequest(
            session_id=session_id, after_sequence=after, follow=follow
        )
    )


async def until_turn_ends(call: Any, turn_id: str) -> list[Event]:
    """A follow=true stream's events up to the end of turn_id."""
    events: list[Event] = []
    while True:
        got = await asyncio.wait_for(call.read(), 20)
        assert isinstance(got, Event), "the stream ended early"
        events.append(got)
        if got.turn_id == turn_id and kinds([got])[0] in {
            "turn_completed",
            "turn_failed",
            "turn_cancelled",
        }:
            return events


async def attached(stub: SessionStub, session_id: str, count: int, replayed: int) -> list[Any]:
    """count follow=true streams from the start, each past the replayed events already stored."""
    calls = [following(stub, session_id) for _ in range(count)]
    for call in calls:
        for _ in range(replayed):
            await next_event(call)
    return calls


REPLY = "one two three four five six seven eight nine ten"


async def test_followers_on_the_turns_replica_are_served_from_memory(database_url: str) -> None:
    async with counted_replicas(database_url, 1) as (configs, [replica]):
        session_id = await started_session(
            configs, replica.stub, bundle({"reply": REPLY, "delay_ms": 40})
        )
        first = await collect(send(replica.stub, session_id, "warm up"))
        followers = await attached(replica.stub, session_id, 25, len(first))
        start = await replica.sql.quiet()
        flushes = replica.app.runner.flushes
        events = await collect(send(replica.stub, session_id, "go"))
        turn_id = events[0].turn_id
        logs = await asyncio.gather(*(until_turn_ends(call, turn_id) for call in followers))
        for call in followers:
            call.cancel()
        reads = replica.sql.event_reads(start)
        writes = replica.app.runner.flushes - flushes
        assert kinds(events)[-1] == "turn_completed"
        assert text_of(events) == REPLY
        for log in logs:
            assert [e.SerializeToString() for e in log] == [e.SerializeToString() for e in events]
        assert_gap_free([*first, *events])
        # 25 followers across many flushes, and the log was not read once for them.
        assert writes >= 5
        assert reads <= 1, [s[:60] for s in replica.sql.statements[start:] if "session_events" in s]


async def test_idle_followers_do_no_database_work(database_url: str) -> None:
    async with counted_replicas(database_url, 1) as (configs, [replica]):
        session_id = await started_session(configs, replica.stub, bundle({"reply": "hi"}))
        first = await collect(send(replica.stub, session_id, "hello"))
        followers = await attached(replica.stub, session_id, 20, len(first))
        start = await replica.sql.quiet()
        await asyncio.sleep(2.5)
        idle = replica.sql.statements[start:]
        # They still follow: the next turn reaches every one of them.
        events = await collect(send(replica.stub, session_id, "again"))
        logs = await asyncio.gather(
            *(until_turn_ends(call, events[0].turn_id) for call in followers)
        )
        for call in followers:
            call.cancel()
        assert idle == []
        assert all(len(log) == len(events) for log in logs)


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_followers_on_another_replica_share_one_read_per_wake_up() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        async with counted_replicas(url, 2) as (configs, [runs, watches]):
            session_id = await started_session(
                configs, runs.stub, bundle({"reply": REPLY, "delay_ms": 60})
            )
            first = await collect(send(runs.stub, session_id, "warm up"))
            followers = await attached(watches.stub, session_id, 30, len(first))
            start = await watches.sql.quiet()
            flushes = runs.app.runner.flushes
            events = await collect(send(runs.stub, session_id, "go"))
            turn_id = events[0].turn_id
            logs = await asyncio.gather(*(until_turn_ends(call, turn_id) for call in followers))
            for call in followers:
                call.cancel()
            reads = watches.sql.event_reads(start)
            # The turn's own commits: one per flush, and the one that started it.
            commits = runs.app.runner.flushes - flushes + 1
            for log in logs:
                assert [e.SerializeToString() for e in log] == [
                    e.SerializeToString() for e in events
                ]
            assert commits >= 5
            # At most one read per commit announced, for all 30 followers together.
            assert 1 <= reads <= commits, watches.sql.statements[start:]


async def abandoned(call: Any) -> Event:
    """The TurnFailed the stream gets; anything else before it is skipped.

    Its timeout only fails a hung stream.
    """

    async def final() -> Event:
        while True:
            got = await call.read()
            assert isinstance(got, Event), "the stream ended without a final event"
            if got.HasField("turn_failed"):
                return got

    return await asyncio.wait_for(final(), 30)


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_followers_of_a_killed_replicas_turn_get_turn_abandoned() -> None:
    require_postgres()
    lease = 2.0
    with fresh_postgres_database() as url:
        env = {"TANDEM_TURN_LEASE_SECONDS": str(lease)}
        async with deployment(url, session_env=env) as tandem:
            doomed, survivor = tandem.sessions
            await tandem.configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="stall",
                    config=config_pb2.Config(
                        name="stall",
                        yaml_content=bundle({"script": [{"reply": "so far", "stall": True}]}),
                    ),
                )
            )
            sessions = [
                (
                    await doomed.CreateSession(
                        session_service_pb2.CreateSessionRequest(config_id="stall", start=True)
                    )
                ).session_id
                for _ in range(3)
            ]
            followed, read_later = sessions[:2]
            turns = {}
            for session_id in sessions:
                call = send(doomed, session_id, "go")
                started = await next_event(call)
                turns[session_id] = started.turn_id
                while kinds([await next_event(call)])[0] != "content_delta":
                    pass
            # Clients already following on the surviving replica, until the turn ends and
            # for good.
            followers = [following(survivor, followed, follow=False) for _ in range(5)]
            followers += [following(survivor, followed, follow=True) for _ in range(5)]
            for call in followers:
                await next_event(call)
            tandem.replicas[0].process.kill()
            await tandem.replicas[0].process.wait()
            killed = time.monotonic()
            finals = await asyncio.gather(*(abandoned(call) for call in followers))
            for call in followers:
                call.cancel()
            for final in finals:
                assert final.turn_id == turns[followed]
                assert final.turn_failed.code == "TURN_ABANDONED"
            assert len({f.sequence for f in finals}) == 1
            # Nobody follows the other two; any read of them fails their dead turn.
            await asyncio.sleep(max(0.0, lease + 0.3 - (time.monotonic() - killed)))
            got = await survivor.GetSession(
                session_service_pb2.GetSessionRequest(session_id=read_later)
            )
            assert got.active_turn_id == ""
            page = await survivor.ListSessions(session_service_pb2.ListSessionsRequest())
            assert {s.session_id: s.active_turn_id for s in page.sessions} == {
                s: "" for s in sessions
            }
            for session_id in sessions:
                log = await collect(
                    survivor.StreamEvents(
                        session_service_pb2.StreamEventsRequest(session_id=session_id)
                    )
                )
                assert_gap_free(log)
                assert log[-1].turn_id == turns[session_id]
                assert log[-1].turn_failed.code == "TURN_ABANDONED"
                assert kinds(log).count("turn_failed") == 1
