"""A database that is down answers UNAVAILABLE (retryable), and SQL errors never log values.

The outage is real: a PostgreSQL server the test starts itself, then stops while both services
are running, then starts again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
)
from shared._generated.tandem.session.v1 import (
    session_pb2,
    session_service_pb2,
)
from shared.db.engine import create_engine, dispose_engine
from shared.rpc.status import as_tandem_error
from tests.support.pair import running_pair
from tests.support.pg_cluster import pg_cluster
from tests.support.rpc import detail, error_info, rich_status
from tests.support.turns import bundle

C = config_service_pb2
S = session_service_pb2


async def first(stream: Any) -> Any:
    async for item in stream:
        return item
    return None


def assert_unavailable(error: grpc.aio.AioRpcError, method: str) -> None:
    assert error.code() is grpc.StatusCode.UNAVAILABLE, (method, error.code(), error.details())
    rich_status(error)
    assert error_info(error).reason == "DATABASE_UNAVAILABLE"
    assert detail(error, error_details_pb2.RetryInfo).retry_delay.ToTimedelta().total_seconds() > 0


async def test_a_database_outage_is_unavailable_on_both_services_and_they_recover() -> None:
    with pg_cluster() as cluster:
        async with running_pair(cluster.url) as pair:
            configs, sessions = pair.configs, pair.sessions
            await configs.CreateConfig(
                C.CreateConfigRequest(
                    config_id="agent",
                    config=config_pb2.Config(name="agent", yaml_content=bundle({})),
                )
            )
            session = await sessions.CreateSession(S.CreateSessionRequest(config_id="agent"))
            note = session_pb2.Message(role=session_pb2.ROLE_USER, content="a note")

            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "GetConfig": lambda: configs.GetConfig(C.GetConfigRequest(config_id="agent")),
                "ListConfigs": lambda: configs.ListConfigs(C.ListConfigsRequest()),
                "CreateConfig": lambda: configs.CreateConfig(
                    C.CreateConfigRequest(
                        config=config_pb2.Config(name="other", yaml_content=bundle({}))
                    )
                ),
                "WatchConfigs": lambda: first(configs.WatchConfigs(C.WatchConfigsRequest())),
                "GetSession": lambda: sessions.GetSession(
                    S.GetSessionRequest(session_id=session.session_id)
                ),
                "ListSessions": lambda: sessions.ListSessions(S.ListSessionsRequest()),
                "AppendMessage": lambda: sessions.AppendMessage(
                    S.AppendMessageRequest(session_id=session.session_id, message=note)
                ),
                "StreamEvents": lambda: first(
                    sessions.StreamEvents(S.StreamEventsRequest(session_id=session.session_id))
                ),
            }

            await asyncio.to_thread(cluster.stop)
            for name, call in calls.items():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call()
                assert_unavailable(caught.value, name)

            await asyncio.to_thread(cluster.start)
            got = await configs.GetConfig(C.GetConfigRequest(config_id="agent"))
            assert got.revision == 1
            appended = await sessions.AppendMessage(
                S.AppendMessageRequest(session_id=session.session_id, message=note)
            )
            assert appended.content == "a note"


async def test_sql_errors_are_logged_without_their_values(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "reply-text-that-must-stay-out-of-logs"
    engine = create_engine(database_url)
    # On PostgreSQL the server's own message quotes the value; on SQLite only the statement's
    # parameters would.
    statement = (
        "SELECT CAST(:value AS INTEGER)"
        if make_url(database_url).get_backend_name() == "postgresql"
        else "SELECT * FROM no_such_table WHERE name = :value"
    )
    try:
        with caplog.at_level(logging.DEBUG):
            async with engine.connect() as connection:
                with pytest.raises(DBAPIError) as caught:
                    await connection.execute(text(statement), {"value": secret})
            error = as_tandem_error(caught.value, "/tandem.test/Method")
    finally:
        await dispose_engine(engine)
    assert error.reason == "INTERNAL"
    assert secret not in error.message
    assert "/tandem.test/Method" in caplog.text
    assert "statement" in caplog.text  # the log still says what failed
    assert secret not in caplog.text
