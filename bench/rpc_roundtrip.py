"""Round-trip cost of the server plumbing every RPC pays: interceptor, limits, rich errors.

Starts ConfigService in process on a temporary SQLite file and times, over a real loopback
channel, health checks (the success path) and a GetConfig of a missing config (the error path, which
builds and serializes a google.rpc.Status). Prints latency percentiles, throughput and RSS.

    .venv/bin/python -m bench.rpc_roundtrip [--calls N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.load import report, run_calls
from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from shared._generated.tandem.config.v1 import config_service_pb2, config_service_pb2_grpc


async def measure(
    label: str, calls: int, concurrency: int, one_call: Callable[[], Awaitable[None]]
) -> None:
    """Runs calls of one_call, concurrency at a time, and prints the figures."""

    async def numbered(_: int) -> None:
        await one_call()

    report(f"{label} ({calls} calls)", await run_calls(calls, concurrency, numbered))


async def main(calls: int, concurrency: int) -> None:
    """Benchmark entry point."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = ConfigServiceSettings(
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            config_service_listen="127.0.0.1:0",
        )
        service = await config_app.build(settings)
        await service.start()
        try:
            async with grpc.aio.insecure_channel(service.server.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                configs = config_service_pb2_grpc.ConfigServiceStub(channel)
                check = health_pb2.HealthCheckRequest(service="")
                get = config_service_pb2.GetConfigRequest(config_id="missing")

                async def ok() -> None:
                    await health.Check(check)

                async def error() -> None:
                    try:
                        await configs.GetConfig(get)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() is not grpc.StatusCode.NOT_FOUND:
                            raise
                    else:
                        raise AssertionError("expected NOT_FOUND")

                await measure("warm-up", 200, concurrency, ok)
                await measure("health Check (success)", calls, concurrency, ok)
                await measure("GetConfig (rich error)", calls, concurrency, error)
        finally:
            await service.stop(0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of client+server process: {rss:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrency))
