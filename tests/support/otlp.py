"""A minimal OTLP/gRPC receiver for tests: what services export, kept in memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def _attribute(resource: Any, key: str) -> str:
    for attribute in resource.attributes:
        if attribute.key == key:
            return str(attribute.value.string_value)
    return ""


class Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """A minimal OTLP/gRPC receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.port = 0
        self.spans: list[tuple[str, str]] = []  # (service.name, span name)
        self.metrics: set[tuple[str, str]] = set()  # (service.name, metric name)
        self.spans_by_instance: Counter[tuple[str, str]] = Counter()  # (instance, span name)

    def env(self) -> dict[str, str]:
        """OTEL_* variables that point a service here and export quickly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
        }

    @staticmethod
    def _service(resource: Any) -> str:
        return _attribute(resource, "service.name")

    async def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for resource_spans in request.resource_spans:
                service = self._service(resource_spans.resource)
                instance = _attribute(resource_spans.resource, "service.instance.id")
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, span.name) for span in scope.spans)
                    self.spans_by_instance.update((instance, span.name) for span in scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        for resource_metrics in request.resource_metrics:
            service = self._service(resource_metrics.resource)
            for scope in resource_metrics.scope_metrics:
                self.metrics.update((service, m.name) for m in scope.metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@asynccontextmanager
async def otlp_collector() -> AsyncIterator[Collector]:
    """A receiver on a free port for as long as the context lasts."""
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        collector, server
    )
    collector.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield collector
    finally:
        await server.stop(0)
