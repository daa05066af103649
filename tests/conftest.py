"""Fixtures for every layer: databases on both backends, in-process servers, real stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from session_service.app import SessionServiceApp
from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared._generated.tandem.session.v1 import session_service_pb2_grpc
from shared.app import ServiceApp
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.pair import (
    Stack,
    running_config_service,
    running_pair,
    running_session_service,
)
from tests.support.sandbox import TEST_BUNDLE_ENV_ALLOW, TEST_EGRESS_ALLOW

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(autouse=True)
def sandboxed_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every service a test starts keeps workspaces under the test's own folder.

    The test's folder is the one extra root tools may reach, so tests can hand files to a
    turn; bundles may reference only the variables in TEST_BUNDLE_ENV_ALLOW, and providers
    connect only to TEST_EGRESS_ALLOW.
    """
    monkeypatch.setenv("TANDEM_WORKSPACE_ROOT", str(tmp_path / "workspaces"))
    monkeypatch.setenv("TANDEM_TOOL_ALLOWED_ROOTS", str(tmp_path))
    monkeypatch.setenv("TANDEM_BUNDLE_ENV_ALLOW", TEST_BUNDLE_ENV_ALLOW)
    monkeypatch.setenv("TANDEM_EGRESS_ALLOW", TEST_EGRESS_ALLOW)


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
    async with running_config_service(sqlite_url) as app:
        yield app


@pytest.fixture
async def config_app(database_url: str) -> AsyncIterator[ServiceApp]:
    """ConfigService in process on a free port, over each database backend."""
    async with running_config_service(database_url, watch_poll_seconds=0.5) as app:
        yield app


@pytest.fixture
async def configs(
    config_app: ServiceApp,
) -> AsyncIterator[config_service_pb2_grpc.ConfigServiceAsyncStub]:
    """A real stub to ConfigService on each database backend."""
    async with grpc.aio.insecure_channel(config_app.server.address) as channel:
        yield config_service_pb2_grpc.ConfigServiceStub(channel)


@pytest.fixture
async def stack(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """ConfigService and SessionService in process, over each database backend."""
    monkeypatch.setenv("TANDEM_TEST_SECRET", "s3cr3t-value-never-shown")
    async with running_pair(database_url, config={"watch_poll_seconds": 0.5}) as running:
        yield running


@pytest.fixture
async def session_service(
    tmp_path: Path, config_service: ServiceApp
) -> AsyncIterator[SessionServiceApp]:
    """SessionService in process on a free port, pointed at the in-process ConfigService."""
    async with running_session_service(
        f"sqlite:///{tmp_path / 'tandem-session.db'}", config_service.server.address
    ) as app:
        yield app


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
def config_stub(config_channel: grpc.aio.Channel) -> config_service_pb2_grpc.ConfigServiceAsyncStub:
    """A real ConfigService stub."""
    return config_service_pb2_grpc.ConfigServiceStub(config_channel)


@pytest.fixture
def session_stub(
    session_channel: grpc.aio.Channel,
) -> session_service_pb2_grpc.SessionServiceAsyncStub:
    """A real SessionService stub."""
    return session_service_pb2_grpc.SessionServiceStub(session_channel)
