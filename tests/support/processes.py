"""Services as real child processes, the way `make run` and Kubernetes start them."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import grpc

from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared._generated.tandem.session.v1 import session_service_pb2_grpc

_LISTENING = re.compile(r"listening on (\S+:\d+)")


@dataclass
class RunningService:
    """A started service process and the address it bound."""

    process: asyncio.subprocess.Process
    address: str
    log: list[str]


async def _read_until_listening(process: asyncio.subprocess.Process, log: list[str]) -> str:
    assert process.stderr is not None
    while True:
        raw = await process.stderr.readline()
        if not raw:
            raise AssertionError("service exited before listening:\n" + "".join(log))
        line = raw.decode()
        log.append(line)
        match = _LISTENING.search(line)
        if match:
            return match.group(1)


async def _drain(process: asyncio.subprocess.Process, log: list[str]) -> None:
    assert process.stderr is not None
    async for raw in process.stderr:
        log.append(raw.decode())


@asynccontextmanager
async def service_process(
    args: list[str], env: Mapping[str, str], startup_timeout: float = 30
) -> AsyncIterator[RunningService]:
    """Runs `python args...` with env added, until it logs where it listens."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        address = await asyncio.wait_for(_read_until_listening(process, log), startup_timeout)
        drain = asyncio.create_task(_drain(process, log))
        yield RunningService(process, address, log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if drain is not None:
            await drain


@dataclass
class Deployment:
    """ConfigService and SessionService replicas as processes on one database, with stubs."""

    config: RunningService
    replicas: list[RunningService]
    configs: config_service_pb2_grpc.ConfigServiceAsyncStub
    sessions: list[session_service_pb2_grpc.SessionServiceAsyncStub]
    config_replicas: list[RunningService]


@asynccontextmanager
async def deployment(
    database_url: str,
    replicas: int = 2,
    session_env: Mapping[str, str] | None = None,
    *,
    config_replicas: int = 1,
    config_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Deployment]:
    """ConfigService and SessionService processes, as Kubernetes would run them.

    With several ConfigService replicas, SessionService is given all their addresses and
    spreads its calls with round_robin, as it does over a headless Service's DNS name.
    Each ConfigService replica gets OTEL_RESOURCE_ATTRIBUTES service.instance.id=config-N.
    """
    base = {"TANDEM_DATABASE_URL": database_url, "TANDEM_CONFIG_SERVICE_LISTEN": "127.0.0.1:0"}
    async with AsyncExitStack() as stack:
        configs = [
            await stack.enter_async_context(
                service_process(
                    ["-m", "config_service"],
                    {
                        **base,
                        **(config_env or {}),
                        "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id=config-{index}",
                    },
                )
            )
            for index in range(config_replicas)
        ]
        target = (
            configs[0].address
            if config_replicas == 1
            else "ipv4:" + ",".join(c.address for c in configs)
        )
        env = {
            "TANDEM_DATABASE_URL": database_url,
            "TANDEM_SESSION_SERVICE_LISTEN": "127.0.0.1:0",
            "TANDEM_CONFIG_SERVICE_TARGET": target,
            **(session_env or {}),
        }
        running = [
            await stack.enter_async_context(service_process(["-m", "session_service"], env))
            for _ in range(replicas)
        ]
        config_channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(configs[0].address)
        )
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(r.address)) for r in running
        ]
        yield Deployment(
            configs[0],
            running,
            config_service_pb2_grpc.ConfigServiceStub(config_channel),
            [session_service_pb2_grpc.SessionServiceStub(c) for c in channels],
            configs,
        )
