"""Builds the tracer and meter providers from the standard `OTEL_*` variables.

Telemetry is off unless those variables ask for an exporter. Off means no-op providers and
no interceptors or SQL hooks installed, so an untraced deployment pays nothing for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.telemetry.rpc_metrics import RpcMetricsInterceptor

_log = logging.getLogger(__name__)

INSTRUMENTATION = "tandem"
_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
# Probes call Health every few seconds; tracing them would bury the real traffic.
_UNTRACED = ("grpc.health.v1.Health", "grpc.reflection.")


class TelemetryConfigError(ValueError):
    """The OTEL_* variables ask for something this build cannot export."""


def requested(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for telemetry (an OTLP endpoint or an explicit exporter)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if any(env.get(name) for name in _ENDPOINTS):
        return True
    return any(_exporters(env, name) for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"))


def _exporters(env: Mapping[str, str], name: str) -> list[str]:
    raw = env.get(name, "").strip().lower()
    return [e.strip() for e in raw.split(",") if e.strip() and e.strip() != "none"]


@dataclass
class Telemetry:
    """The providers a service reports through, or none at all when telemetry is off."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    _engine_tracers: list[EngineTracer] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded."""
        return self.tracer_provider is not None or self.meter_provider is not None

    @classmethod
    def off(cls) -> Telemetry:
        """Records nothing."""
        return cls()

    @classmethod
    def from_environment(
        cls, service_name: str, env: Mapping[str, str], *, install: bool = True
    ) -> Telemetry:
        """Providers and exporters as the OTEL_* variables in env describe them.

        With install, they also become the process's global providers.
        """
        if not requested(env):
            return cls.off()
        attributes: dict[str, str] = {}
        if not env.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = service_name
        resource = Resource.create(attributes)
        span_processors = [_span_processor(kind, env) for kind in _trace_exporters(env)]
        readers = [_metric_reader(kind, env) for kind in _metric_exporters(env)]
        tracer_provider = TracerProvider(resource=resource) if span_processors else None
        for processor in span_processors:
            assert tracer_provider is not None
            tracer_provider.add_span_processor(processor)
        meter_provider = (
            MeterProvider(resource=resource, metric_readers=readers) if readers else None
        )
        telemetry = cls(tracer_provider, meter_provider)
        if install:
            telemetry.install_globally()
        _log.info(
            "telemetry on: traces to %s, metrics to %s",
            ",".join(_trace_exporters(env)) or "nowhere",
            ",".join(_metric_exporters(env)) or "nowhere",
        )
        return telemetry

    @classmethod
    def for_tests(
        cls, span_processor: SpanProcessor | None, metric_reader: MetricReader | None
    ) -> Telemetry:
        """Providers that feed in-memory exporters; never installed globally."""
        tracer_provider = None
        if span_processor is not None:
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(span_processor)
        meter_provider = None
        if metric_reader is not None:
            meter_provider = MeterProvider(metric_readers=[metric_reader])
        return cls(tracer_provider, meter_provider)

    def install_globally(self) -> None:
        """Makes these the process's providers, for libraries that look there."""
        if self.tracer_provider is not None:
            trace.set_tracer_provider(self.tracer_provider)
        if self.meter_provider is not None:
            metrics.set_meter_provider(self.meter_provider)

    def tracer(self) -> trace.Tracer:
        """Tandem's tracer; a no-op one when tracing is off."""
        if self.tracer_provider is None:
            return trace.NoOpTracer()
        return self.tracer_provider.get_tracer(INSTRUMENTATION)

    def meter(self) -> metrics.Meter:
        """Tandem's meter; a no-op one when metrics are off."""
        if self.meter_provider is None:
            return metrics.NoOpMeter(INSTRUMENTATION)
        return self.meter_provider.get_meter(INSTRUMENTATION)

    def server_interceptors(self) -> Sequence[Any]:
        """Outermost server interceptors: a span per RPC, then the duration metric."""
        interceptors: list[Any] = []
        if self.tracer_provider is not None:
            tracing = aio_server_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=self.tracer_provider, filter_=_traced_rpcs()
            )
            interceptors.append(tracing)
        if self.meter_provider is not None:
            interceptors.append(RpcMetricsInterceptor(self.meter()))
        return interceptors

    def client_interceptors(self) -> Sequence[Any]:
        """Client interceptors that start a span per call and pass its context on."""
        if self.tracer_provider is None:
            return []
        return list(
            aio_client_interceptors(  # type: ignore[no-untyped-call]
                tracer_provider=self.tracer_provider, filter_=_traced_rpcs()
            )
        )

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A span per SQL statement, child of whatever span runs it."""
        if self.tracer_provider is None:
            return
        # Per engine rather than the global instrumentor: two services in one process (the
        # tests) each keep their own provider.
        connections = self.meter().create_up_down_counter(
            "db.client.connections.usage", unit="{connection}"
        )
        self._engine_tracers.append(
            EngineTracer(  # type: ignore[no-untyped-call]
                self.tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy"),
                engine.sync_engine,
                connections,
            )
        )

    async def shutdown(self) -> None:
        """Flushes and stops the exporters."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _traced_rpcs() -> Any:
    return negate(any_of(*(service_prefix(prefix) for prefix in _UNTRACED)))


def _trace_exporters(env: Mapping[str, str]) -> list[str]:
    kinds = _exporters(env, "OTEL_TRACES_EXPORTER")
    if kinds or env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return kinds
    return ["otlp"]


def _metric_exporters(env: Mapping[str, str]) -> list[str]:
    kinds = _exporters(env, "OTEL_METRICS_EXPORTER")
    if kinds or env.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return kinds
    return ["otlp"]


def _check_protocol(env: Mapping[str, str]) -> None:
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip().lower()
    if protocol != "grpc":
        raise TelemetryConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; Tandem exports OTLP "
            "over gRPC (unset it or set it to 'grpc')."
        )


def _span_processor(kind: str, env: Mapping[str, str]) -> SpanProcessor:
    if kind == "otlp":
        _check_protocol(env)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter())
    if kind == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    raise TelemetryConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {kind!r}")


def _metric_reader(kind: str, env: Mapping[str, str]) -> MetricReader:
    if kind == "otlp":
        _check_protocol(env)
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    if kind == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    raise TelemetryConfigError(f"OTEL_METRICS_EXPORTER: unknown exporter {kind!r}")
