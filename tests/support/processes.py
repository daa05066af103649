"""Services as real child processes, the way `make run` and Kubernetes start them."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

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
