"""Turns across two SessionService processes on one PostgreSQL: follow and cancel anywhere."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
)
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tests.support.databases import fresh_postgres_database, require_postgres
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


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_a_turn_on_one_replica_is_followed_and_cancelled_from_another() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        async with deployment(url) as tandem:
            configs = tandem.configs
            runs_turn, elsewhere = tandem.sessions
            script = [{"reply": "one two three four five six", "stall": True}]
            await configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="app",
                    config=config_pb2.Config(
                        name="app", yaml_content=bundle({"script": script, "delay_ms": 30})
                    ),
                )
            )
            created = await runs_turn.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="app", start=True)
            )
            call = send(runs_turn, created.session_id, "go")
            head = [await next_event(call) for _ in range(2)]
            call.cancel()
            # The other replica replays what is stored and follows what comes live.
            follower = elsewhere.StreamEvents(
                session_service_pb2.StreamEventsRequest(
                    session_id=created.session_id, after_sequence=head[-1].sequence
                )
            )
            live = [await next_event(follower)]
            while text_of([*head, *live]) != "one two three four five six":
                live.append(await next_event(follower))
            # The provider stalls: only the cancel, sent to the other replica, ends the turn.
            cancelled = await elsewhere.CancelTurn(
                session_service_pb2.CancelTurnRequest(session_id=created.session_id)
            )
            rest = await collect(follower)
            whole = [*head, *live, *rest]
            assert cancelled.turn_id == head[0].turn_id
            assert kinds(whole)[-1] == "turn_cancelled"
            assert_gap_free(whole)
            assert whole[-1].turn_cancelled.partial_message.content == "one two three four five six"


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_a_killed_replicas_turn_is_failed_once_its_lease_expires() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        async with deployment(url, session_env={"TANDEM_TURN_LEASE_SECONDS": "1"}) as tandem:
            configs = tandem.configs
            first, second = tandem.sessions
            doomed = tandem.replicas[0]
            slow = " ".join(f"w{n}" for n in range(100))
            await configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="app",
                    config=config_pb2.Config(
                        name="app", yaml_content=bundle({"reply": slow, "delay_ms": 200})
                    ),
                )
            )
            created = await first.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="app", start=True)
            )
            call = send(first, created.session_id, "go")
            orphan = await next_event(call)
            doomed.process.kill()
            await doomed.process.wait()
            call.cancel()

            # Until the lease runs out the turn still counts as running; then it is failed
            # and the session takes a new turn.
            async def first_new_turn() -> tuple[Any, Event]:
                while True:
                    retry = send(second, created.session_id, "again")
                    try:
                        return retry, await next_event(retry)
                    except grpc.aio.AioRpcError as exc:
                        refused = exc
                    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
                    await asyncio.sleep(0.2)

            # The timeout only fails a lease that never expires.
            retry, fresh = await asyncio.wait_for(first_new_turn(), 30)
            assert fresh.HasField("turn_started")
            assert fresh.turn_id != orphan.turn_id
            await second.CancelTurn(
                session_service_pb2.CancelTurnRequest(session_id=created.session_id)
            )
            await collect(retry, within=10)
            log = await collect(
                second.StreamEvents(
                    session_service_pb2.StreamEventsRequest(session_id=created.session_id)
                )
            )
            assert_gap_free(log)
            [failed] = [e for e in log if e.HasField("turn_failed")]
            assert failed.turn_id == orphan.turn_id
            assert failed.turn_failed.code == "TURN_ABANDONED"
            assert failed.sequence < fresh.sequence


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_lifecycle_calls_fail_a_dead_replicas_turn_instead_of_waiting_on_it() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        async with deployment(url, session_env={"TANDEM_TURN_LEASE_SECONDS": "1"}) as tandem:
            first, second = tandem.sessions
            slow = " ".join(f"w{n}" for n in range(100))
            await tandem.configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="app",
                    config=config_pb2.Config(
                        name="app", yaml_content=bundle({"reply": slow, "delay_ms": 200})
                    ),
                )
            )
            created = await first.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="app", start=True)
            )
            call = send(first, created.session_id, "go")
            await next_event(call)
            tandem.replicas[0].process.kill()
            await tandem.replicas[0].process.wait()
            call.cancel()
            await asyncio.sleep(1.5)  # past the lease; nothing has read the session since
            terminated = await second.TerminateSession(
                session_service_pb2.TerminateSessionRequest(session_id=created.session_id)
            )
            assert terminated.status == session_pb2.SESSION_STATUS_TERMINATED
            assert terminated.active_turn_id == ""
            await second.DeleteSession(
                session_service_pb2.DeleteSessionRequest(session_id=created.session_id)
            )
