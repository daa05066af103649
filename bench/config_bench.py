"""GetConfig and ListConfigs under 32 concurrent clients, beside a bare grpc.aio baseline.

Starts ConfigService in process (SQLite by default, or the database in TANDEM_DATABASE_URL),
stores configs shaped like the production example, and measures throughput and p50/p99
latency over a loopback channel per client. In the same run, a bare `grpc.aio` server that
answers the same RPCs with a constant message of the same size shows what gRPC itself costs.

    .venv/bin/python -m bench.config_bench [--seconds 5] [--clients 32] [--database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import grpc

from bench.load import report, run_load
from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)

DOCUMENT = """\
---
bundle:
  name: production
  version: 1.0.0
  description: Production configuration

includes:
  - bundle: foundation

providers:
  - module: provider-anthropic
    config:
      api_key: ${ANTHROPIC_API_KEY}
      model: claude-sonnet-4-5
      max_tokens: 4096

session:
  orchestrator: loop-streaming
  context: context-simple

tools:
  - module: tool-filesystem
    config:
      allowed_paths: ["/app/data"]
  - module: tool-web

hooks:
  - module: hooks-logging
    config:
      log_level: INFO
---

# Production Assistant

You are a production-grade assistant with restricted capabilities.
"""


class ConstantServicer(config_service_pb2_grpc.ConfigServiceServicer):
    """Answers with prebuilt messages: the cost of gRPC and protobuf alone."""

    def __init__(
        self, config: config_pb2.Config, page: config_service_pb2.ListConfigsResponse
    ) -> None:
        self._config = config
        self._page = page

    async def GetConfig(
        self, request: config_service_pb2.GetConfigRequest, context: object
    ) -> config_pb2.Config:
        return self._config

    async def ListConfigs(
        self, request: config_service_pb2.ListConfigsRequest, context: object
    ) -> config_service_pb2.ListConfigsResponse:
        return self._page


async def measure(address: str, clients: int, seconds: float, label: str, config_id: str) -> None:
    """GetConfig and ListConfigs(page_size=50, FULL) against address."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(clients)]
    stubs = [config_service_pb2_grpc.ConfigServiceStub(c) for c in channels]
    get = config_service_pb2.GetConfigRequest(config_id=config_id)
    page = config_service_pb2.ListConfigsRequest(page_size=50, view=config_pb2.CONFIG_VIEW_FULL)
    turn = iter(range(1 << 62))
    try:

        async def get_call() -> object:
            return await stubs[next(turn) % clients].GetConfig(get)

        async def list_call() -> object:
            return await stubs[next(turn) % clients].ListConfigs(page)

        report(f"{label} GetConfig", await run_load(clients, seconds, get_call))
        report(f"{label} ListConfigs (50, FULL)", await run_load(clients, seconds, list_call))
    finally:
        for channel in channels:
            await channel.close(None)


async def main(seconds: float, clients: int, database: str | None) -> None:
    """Benchmark entry point."""
    with tempfile.TemporaryDirectory() as tmp:
        url = database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = ConfigServiceSettings(database_url=url, config_service_listen="127.0.0.1:0")
        service = await config_app.build(settings)
        await service.start()
        try:
            async with grpc.aio.insecure_channel(service.server.address) as channel:
                stub = config_service_pb2_grpc.ConfigServiceStub(channel)
                stored = []
                for n in range(200):
                    stored.append(
                        await stub.CreateConfig(
                            config_service_pb2.CreateConfigRequest(
                                config=config_pb2.Config(
                                    name=f"bench-{n}", yaml_content=DOCUMENT, tags={"n": str(n)}
                                )
                            )
                        )
                    )
                sample = await stub.GetConfig(
                    config_service_pb2.GetConfigRequest(config_id=stored[0].config_id)
                )
                sample_page = await stub.ListConfigs(
                    config_service_pb2.ListConfigsRequest(
                        page_size=50, view=config_pb2.CONFIG_VIEW_FULL
                    )
                )
            print(
                f"database: {url.split('://')[0]}; {clients} clients, {seconds:.0f}s per row; "
                f"Config {sample.ByteSize()} B, page {sample_page.ByteSize()} B"
            )
            await measure(
                service.server.address, clients, seconds, "ConfigService", sample.config_id
            )
        finally:
            await service.stop(0)

    bare = grpc.aio.server()
    config_service_pb2_grpc.add_ConfigServiceServicer_to_server(
        # Only the two measured RPCs are served; the others stay abstract on purpose.
        ConstantServicer(sample, sample_page),  # type: ignore[abstract]
        bare,
    )
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        await measure(f"127.0.0.1:{port}", clients, seconds, "bare grpc.aio", sample.config_id)
    finally:
        await bare.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--database", default=os.environ.get("TANDEM_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients, args.database))
