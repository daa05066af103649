"""SIGTERM to a SessionService replica under load: no unary call fails, no turn event is lost.

Two SessionService processes on one PostgreSQL, reached the way clients reach them in a
deployment: one channel over both addresses with round_robin and UNAVAILABLE retried.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc
import pytest

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.rpc.channel import service_channel
from shared.rpc.server import ServerOptions
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.processes import deployment
from tests.support.rpc import error_info
from tests.support.turns import Event, assert_gap_free, bundle, collect, next_event, send

SESSION_SERVICE = "tandem.session.v1.SessionService"
TERMINAL = ("turn_completed", "turn_failed")


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_sigterm_during_unary_calls_and_turn_streams_loses_nothing() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        env = {"TANDEM_SHUTDOWN_GRACE_SECONDS": "5"}
        async with deployment(url, session_env=env) as tandem:
            doomed, survivor = tandem.replicas
            reply = " ".join(f"w{n}" for n in range(60))
            await tandem.configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="app",
                    config=config_pb2.Config(
                        name="app", yaml_content=bundle({"reply": reply, "delay_ms": 40})
                    ),
                )
            )
            on_doomed, on_survivor = tandem.sessions
            sessions = [
                (
                    await on_doomed.CreateSession(
                        session_service_pb2.CreateSessionRequest(config_id="app", start=True)
                    )
                ).session_id
                for _ in range(5)
            ]
            streams = [send(on_doomed, s, "go") for s in sessions]
            seen = [[await next_event(call)] for call in streams]
            options = ServerOptions(8 << 20, 8 << 20)
            both = service_channel(
                f"ipv4:{doomed.address},{survivor.address}", SESSION_SERVICE, options
            )
            async with both:
                balanced = session_service_pb2_grpc.SessionServiceStub(both)
                await asyncio.wait_for(both.channel_ready(), 10)

                async def unary(n: int) -> str:
                    created = await balanced.CreateSession(
                        session_service_pb2.CreateSessionRequest(
                            config_id="app", request_id=f"drain-{n}"
                        ),
                        timeout=20,
                    )
                    return str(created.session_id)

                calls = [asyncio.ensure_future(unary(n)) for n in range(20)]
                await asyncio.sleep(0.01)
                doomed.process.send_signal(signal.SIGTERM)
                created = await asyncio.gather(*calls)
                assert len(set(created)) == 20

            async def rest_of(call: Any, events: list[Event]) -> int:
                """Reads until the turn ends (-1) or the drain ends the stream (its sequence)."""
                ended: grpc.aio.AioRpcError | None = None
                while ended is None:
                    try:
                        events.append(await next_event(call))
                    except grpc.aio.AioRpcError as exc:
                        ended = exc
                    else:
                        if events[-1].WhichOneof("event") in TERMINAL:
                            return -1
                assert ended.code() is grpc.StatusCode.UNAVAILABLE
                assert error_info(ended).reason == "SERVER_DRAINING"
                return int(error_info(ended).metadata["last_sequence"])

            for session_id, call, events in zip(sessions, streams, seen, strict=True):
                last = await rest_of(call, events)
                if last < 0:
                    continue  # the turn ended before the drain reached this stream
                resumed = await collect(
                    on_survivor.StreamEvents(
                        session_service_pb2.StreamEventsRequest(
                            session_id=session_id, after_sequence=last
                        )
                    ),
                    within=30,
                )
                whole = [*events[: last - events[0].sequence + 1], *resumed]
                assert_gap_free(whole)
                assert whole[-1].WhichOneof("event") in TERMINAL
            assert await asyncio.wait_for(doomed.process.wait(), 15) == 0
