"""Fixtures for every layer: databases on both backends, in-process servers, real stubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from config_service import app as config_app_module
from config_service.settings import ConfigServiceSettings
from session_service import app as session_app
from session_service.app import SessionParts
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

# The variables test bundles reference; anything else stays out of their reach, as it would
# on a server whose operator allowed only these.
TEST_BUNDLE_ENV_ALLOW = "TANDEM_TEST_SECRET,TANDEM_UNSET_*,TANDEM_SCAN_PROVIDER_KEY"
# The tests' model servers listen on loopback ports chosen at random.
TEST_EGRESS_ALLOW = "api.openai.com,api.anthropic.com,127.0.0.1:*"


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
    app = await config_app_module.build(settings)
    await app.start()
    yield app
    await app.stop(0)


@pytest.fixture
async def config_app(database_url: str) -> AsyncIterator[ServiceApp]:
    """ConfigService in process on a free port, over each database backend."""
    settings = ConfigServiceSettings(
        database_url=database_url,
        config_service_listen="127.0.0.1:0",
        watch_poll_seconds=0.5,
    )
    app = await config_app_module.build(settings)
    await app.start()
    yield app
    await app.stop(0)


@pytest.fixture
async def configs(
    config_app: ServiceApp,
) -> AsyncIterator[config_service_pb2_grpc.ConfigServiceAsyncStub]:
    """A real stub to ConfigService on each database backend."""
    async with grpc.aio.insecure_channel(config_app.server.address) as channel:
        yield config_service_pb2_grpc.ConfigServiceStub(channel)


@dataclass
class Stack:
    """Both services in process over one database, with stubs and SessionService's parts."""

    config_app: ServiceApp
    session_app: ServiceApp
    parts: SessionParts
    configs: config_service_pb2_grpc.ConfigServiceAsyncStub
    sessions: session_service_pb2_grpc.SessionServiceAsyncStub


@pytest.fixture
async def stack(
    config_app: ServiceApp, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    """ConfigService and SessionService in process, over each database backend."""
    monkeypatch.setenv("TANDEM_TEST_SECRET", "s3cr3t-value-never-shown")
    settings = SessionServiceSettings(
        database_url=database_url,
        session_service_listen="127.0.0.1:0",
        config_service_target=config_app.server.address,
        config_watch_retry_seconds=0.2,
    )
    app, parts = await session_app.build_with_parts(settings)
    await app.start()
    await asyncio.wait_for(parts.watcher.connected.wait(), timeout=10)
    async with (
        grpc.aio.insecure_channel(config_app.server.address) as config_channel,
        grpc.aio.insecure_channel(app.server.address) as session_channel,
    ):
        yield Stack(
            config_app,
            app,
            parts,
            config_service_pb2_grpc.ConfigServiceStub(config_channel),
            session_service_pb2_grpc.SessionServiceStub(session_channel),
        )
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
def config_stub(config_channel: grpc.aio.Channel) -> config_service_pb2_grpc.ConfigServiceAsyncStub:
    """A real ConfigService stub."""
    return config_service_pb2_grpc.ConfigServiceStub(config_channel)


@pytest.fixture
def session_stub(
    session_channel: grpc.aio.Channel,
) -> session_service_pb2_grpc.SessionServiceAsyncStub:
    """A real SessionService stub."""
    return session_service_pb2_grpc.SessionServiceStub(session_channel)
