"""Two ConfigService and two SessionService processes on one PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.otlp import otlp_collector
from tests.support.processes import deployment
from tests.support.turns import bundle, collect

GET_CONFIG = "/tandem.config.v1.ConfigService/GetConfig"
CONFIGS = 24


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_round_robin_spreads_config_calls_over_both_config_replicas() -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        async with (
            otlp_collector() as collector,
            deployment(url, replicas=2, config_replicas=2, config_env=collector.env()) as tandem,
        ):
            for index in range(CONFIGS):
                await tandem.configs.CreateConfig(
                    config_service_pb2.CreateConfigRequest(
                        config_id=f"c{index}",
                        config=config_pb2.Config(name=f"c{index}", yaml_content=bundle({})),
                    )
                )
            # Each preparation of a new config reads it from ConfigService once.
            for index in range(CONFIGS):
                await tandem.sessions[index % 2].PrepareConfig(
                    session_service_pb2.PrepareConfigRequest(config_id=f"c{index}")
                )
            # And sessions with turns work on either replica, whichever ConfigService answers.
            session = await tandem.sessions[1].CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="c0", start=True)
            )
            events = await collect(
                tandem.sessions[0].SendMessage(
                    session_service_pb2.SendMessageRequest(
                        session_id=session.session_id, content="hello"
                    )
                )
            )
            assert events[-1].HasField("turn_completed")

            def served() -> dict[str, int]:
                return {
                    instance: count
                    for (instance, name), count in collector.spans_by_instance.items()
                    if name == GET_CONFIG
                }

            for _ in range(100):
                if sum(served().values()) >= CONFIGS:
                    break
                await asyncio.sleep(0.1)
            per_replica = served()
            print(f"GetConfig calls per ConfigService replica: {per_replica}")
            assert set(per_replica) == {"config-0", "config-1"}
            total = sum(per_replica.values())
            assert total >= CONFIGS
            # round_robin alternates; allow for the watchers' and retries' extra reads.
            assert min(per_replica.values()) >= total * 0.3, per_replica
