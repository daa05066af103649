"""The compose healthcheck command against a real server."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from tests.support.processes import service_process


async def healthcheck(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.rpc.healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode().strip()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serving_services_pass_and_anything_else_fails(tmp_path: Path) -> None:
    env = {
        "TANDEM_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "TANDEM_CONFIG_SERVICE_LISTEN": "127.0.0.1:0",
    }
    async with service_process(["-m", "config_service"], env) as running:
        assert await healthcheck(running.address) == (0, "SERVING")
        assert await healthcheck(running.address, "tandem.config.v1.ConfigService") == (
            0,
            "SERVING",
        )
        assert await healthcheck(running.address, "tandem.session.v1.SessionService") == (
            1,
            "NOT_FOUND",
        )
    code, status = await healthcheck(f"127.0.0.1:{closed_port()}", "", "--timeout", "1")
    assert code == 1
    assert status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
