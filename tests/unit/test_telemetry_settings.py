"""Telemetry is off unless the standard OTEL_* variables ask for it."""

from __future__ import annotations

import pytest

from shared.telemetry.setup import Telemetry, TelemetryConfigError, requested


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_only_an_endpoint_or_an_exporter_turns_telemetry_on(
    env: dict[str, str], expected: bool
) -> None:
    assert requested(env) is expected


def test_off_installs_nothing() -> None:
    telemetry = Telemetry.from_environment("svc", {}, install=False)
    assert not telemetry.enabled
    assert telemetry.server_interceptors() == []
    assert telemetry.client_interceptors() == []
    # No-op instruments: calling them records nothing and costs no provider.
    telemetry.meter().create_counter("c").add(1)
    with telemetry.tracer().start_as_current_span("s") as span:
        assert not span.get_span_context().is_valid


def test_console_exporters_build_both_providers() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}
    telemetry = Telemetry.from_environment("tandem-test", env, install=False)
    assert telemetry.tracer_provider is not None
    assert telemetry.meter_provider is not None
    assert telemetry.tracer_provider.resource.attributes["service.name"] == "tandem-test"
    assert len(telemetry.server_interceptors()) == 2  # tracing, then the duration metric
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def test_only_traces_when_metrics_are_turned_off() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}
    telemetry = Telemetry.from_environment("svc", env, install=False)
    assert telemetry.tracer_provider is not None
    assert telemetry.meter_provider is None
    telemetry.tracer_provider.shutdown()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ],
)
def test_what_cannot_be_exported_is_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(TelemetryConfigError, match=message):
        Telemetry.from_environment("svc", env, install=False)
