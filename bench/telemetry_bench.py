"""What telemetry costs: GetConfig with telemetry off, then on (spans and metrics recorded).

ConfigService runs in process on SQLite; "on" records a server span, SQL spans and the
duration metric for every call, exported in batches to an exporter that counts and drops
them (so the figure is the cost of instrumentation, not of a network).

    .venv/bin/python -m bench.telemetry_bench [--seconds 5] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.config_bench import DOCUMENT
from bench.load import report, run_load
from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared.telemetry.setup import Telemetry


class CountingExporter(SpanExporter):
    """Counts exported spans and keeps none."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def run(label: str, telemetry: Telemetry, clients: int, seconds: float) -> None:
    """Measures GetConfig against a fresh ConfigService built with telemetry."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = ConfigServiceSettings(
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}", config_service_listen="127.0.0.1:0"
        )
        service = await config_app.build(settings, telemetry)
        await service.start()
        channels = [grpc.aio.insecure_channel(service.server.address) for _ in range(clients)]
        try:
            stubs = [config_service_pb2_grpc.ConfigServiceStub(c) for c in channels]
            stored = await stubs[0].CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config=config_pb2.Config(name="bench", yaml_content=DOCUMENT)
                )
            )
            request = config_service_pb2.GetConfigRequest(config_id=stored.config_id)
            turn = iter(range(1 << 62))

            async def call() -> object:
                return await stubs[next(turn) % clients].GetConfig(request)

            report(f"GetConfig, telemetry {label}", await run_load(clients, seconds, call))
        finally:
            for channel in channels:
                await channel.close(None)
            await service.stop(0)


async def main(seconds: float, clients: int) -> None:
    """Benchmark entry point."""
    print(f"SQLite; {clients} clients, {seconds:.0f}s per row")
    await run("off", Telemetry.off(), clients, seconds)
    exporter = CountingExporter()
    reader = InMemoryMetricReader()
    await run("on ", Telemetry.for_tests(BatchSpanProcessor(exporter), reader), clients, seconds)
    print(f"spans exported while on: {exporter.spans}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients))
