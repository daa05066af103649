"""A service process exports over OTLP when the standard variables say where."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from shared._generated.tandem.config.v1 import config_service_pb2, config_service_pb2_grpc
from tests.support.otlp import otlp_collector
from tests.support.processes import service_process


async def test_spans_metrics_and_json_logs_leave_a_real_process(tmp_path: Path) -> None:
    async with otlp_collector() as collector:
        env = {
            "TANDEM_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
            "TANDEM_CONFIG_SERVICE_LISTEN": "127.0.0.1:0",
            "TANDEM_LOG_FORMAT": "json",
            **collector.env(),
        }
        async with service_process(["-m", "config_service"], env) as running:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = config_service_pb2_grpc.ConfigServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.GetConfig(config_service_pb2.GetConfigRequest(config_id="nope"))
                assert error.value.code() == grpc.StatusCode.NOT_FOUND
            wanted_span = ("tandem-config-service", "/tandem.config.v1.ConfigService/GetConfig")
            wanted_metric = ("tandem-config-service", "rpc.server.call.duration")
            for _ in range(100):
                if wanted_span in collector.spans and wanted_metric in collector.metrics:
                    break
                await asyncio.sleep(0.1)
            assert wanted_span in collector.spans
            assert wanted_metric in collector.metrics
            # Every log line is one JSON object.
            records = [json.loads(line) for line in running.log if line.strip()]
            assert any("listening on" in r["message"] for r in records)
