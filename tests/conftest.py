"""Fixtures for every layer: databases on both backends, in-process servers, real stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from session_service import app as session_app
from session_service.settings import SessionServiceSettings
from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared._generated.tandem.session.v1 import session_service_pb2_grpc
from shared.app import ServiceApp
from tests.support.databases import (
    fresh_postgres_database,
    in_ci,
    postgres_unavailable_reason,
)

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def require_postgres() -> None:
    """Skips (or, under CI, fails) the current test when PostgreSQL cannot be reached."""
    reason = postgres_unavailable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"PostgreSQL is required in CI. {reason}")
    pytest.skip(reason)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tandem.db'}"
        return
    require_postgres()
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file for tests that are about RPC plumbing rather than storage."""
    return f"sqlite:///{tmp_path / 'tandem.db'}"


@pytest.fixture
async def config_service(sqlite_url: str) -> AsyncIterator[ServiceApp]:
    """ConfigService in process on a free port."""
    settings = ConfigServiceSettings(database_url=sqlite_url, config_service_listen="127.0.0.1:0")
    app = await config_app.build(settings)
    await app.start()
    yield app
    await app.stop(0)


@pytest.fixture
async def session_service(tmp_path: Path, config_service: ServiceApp) -> AsyncIterator[ServiceApp]:
    """SessionService in process on a free port, pointed at the in-process ConfigService."""
    settings = SessionServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'tandem-session.db'}",
        session_service_listen="127.0.0.1:0",
        config_service_target=config_service.server.address,
    )
    app = await session_app.build(settings)
    await app.start()
    yield app
    await app.stop(0)


@pytest.fixture
async def config_channel(config_service: ServiceApp) -> AsyncIterator[grpc.aio.Channel]:
    """A client channel to the in-process ConfigService."""
    async with grpc.aio.insecure_channel(config_service.server.address) as channel:
        yield channel


@pytest.fixture
async def session_channel(session_service: ServiceApp) -> AsyncIterator[grpc.aio.Channel]:
    """A client channel to the in-process SessionService."""
    async with grpc.aio.insecure_channel(session_service.server.address) as channel:
        yield channel


@pytest.fixture
def config_stub(config_channel: grpc.aio.Channel) -> config_service_pb2_grpc.ConfigServiceStub:
    """A real ConfigService stub."""
    return config_service_pb2_grpc.ConfigServiceStub(config_channel)


@pytest.fixture
def session_stub(
    session_channel: grpc.aio.Channel,
) -> session_service_pb2_grpc.SessionServiceStub:
    """A real SessionService stub."""
    return session_service_pb2_grpc.SessionServiceStub(session_channel)
