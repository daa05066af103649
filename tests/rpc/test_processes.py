"""`python -m config_service` / `python -m session_service` as real processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, inspect

from tests.support.processes import service_process

GRACE_SECONDS = 3.0


def environment(tmp_path: Path, module: str) -> dict[str, str]:
    prefix = "CONFIG" if module == "config_service" else "SESSION"
    return {
        "TANDEM_DATABASE_URL": f"sqlite:///{tmp_path / (module + '.db')}",
        f"TANDEM_{prefix}_SERVICE_LISTEN": "127.0.0.1:0",
        "TANDEM_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }


@pytest.mark.parametrize(
    ("module", "service"),
    [
        ("config_service", "tandem.config.v1.ConfigService"),
        ("session_service", "tandem.session.v1.SessionService"),
    ],
)
@pytest.mark.timeout(60)
async def test_sigterm_turns_health_not_serving_and_exits_cleanly(
    tmp_path: Path, module: str, service: str
) -> None:
    async with service_process(["-m", module], environment(tmp_path, module)) as running:
        async with grpc.aio.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert checked.status == health_pb2.HealthCheckResponse.SERVING

            watch = health.Watch(health_pb2.HealthCheckRequest(service=service))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            running.process.send_signal(signal.SIGTERM)
            # Timeouts here only fail a hung shutdown; the order of what happens is the test.
            update = await asyncio.wait_for(watch.read(), timeout=30)
            assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()

        code = await asyncio.wait_for(running.process.wait(), timeout=30)
        assert code == 0
    assert any("shutting down" in line for line in running.log)


def test_migrate_command_creates_tables_and_exits(tmp_path: Path) -> None:
    env = environment(tmp_path, "config_service")
    result = subprocess.run(
        [sys.executable, "-m", "config_service", "migrate"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    engine = create_engine(env["TANDEM_DATABASE_URL"])
    try:
        assert "config_idempotency_keys" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


async def test_a_taken_port_fails_start_up_loudly(tmp_path: Path) -> None:
    env = environment(tmp_path, "config_service")
    async with service_process(["-m", "config_service"], env) as first:
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "config_service",
            env={**env, "TANDEM_CONFIG_SERVICE_LISTEN": first.address, "PATH": "/usr/bin"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(second.communicate(), timeout=30)
        assert second.returncode != 0
        assert first.address in stderr.decode()
