"""Traces and metrics through real servers: one trace across both services and SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.app import ServiceApp
from shared.telemetry.setup import Telemetry
from tests.support.pair import running_pair
from tests.support.turns import bundle, collect

if TYPE_CHECKING:
    from session_service.app import SessionServiceApp

CONFIG_GET = "/tandem.config.v1.ConfigService/GetConfig"
CREATE_SESSION = "/tandem.session.v1.SessionService/CreateSession"


@dataclass
class Traced:
    """Both services and a client sharing one in-memory span exporter and metric reader."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    telemetry: Telemetry
    config_app: ServiceApp
    session_app: SessionServiceApp
    configs: config_service_pb2_grpc.ConfigServiceAsyncStub
    sessions: session_service_pb2_grpc.SessionServiceAsyncStub
    session_address: str


@pytest.fixture
async def traced(database_url: str, tmp_path: Path) -> AsyncIterator[Traced]:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = Telemetry.for_tests(SimpleSpanProcessor(spans), reader)
    # The test is the client: its channels carry its span's context like any traced client.
    interceptors = list(telemetry.client_interceptors())
    async with running_pair(database_url, telemetry=telemetry, interceptors=interceptors) as pair:
        yield Traced(
            spans,
            reader,
            telemetry,
            pair.config_app,
            pair.session_app,
            pair.configs,
            pair.sessions,
            pair.session_app.server.address,
        )


async def create_config(traced: Traced, config_id: str, document: str) -> None:
    await traced.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=config_id, config=config_pb2.Config(name=config_id, yaml_content=document)
        )
    )


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """Names from span's parent up to the root, as far as the exported spans reach."""
    names: list[str] = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        found = by_id[parent.span_id]
        names.append(found.name)
        parent = found.parent
    return names


def is_sql(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return "db.system" in attributes or "db.system.name" in attributes


async def test_one_trace_spans_the_client_both_services_and_their_sql(traced: Traced) -> None:
    await create_config(traced, "traced", bundle({}))
    traced.spans.clear()
    tracer = traced.telemetry.tracer()
    with tracer.start_as_current_span("client") as root:
        await traced.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id="traced", start=True)
        )
    trace_id = root.get_span_context().trace_id
    spans = [s for s in traced.spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in spans}
    names = [s.name for s in spans]
    # Client span, SessionService's server span, its call to ConfigService, and that server.
    assert names.count(CREATE_SESSION) == 2  # the client's and the server's
    assert names.count(CONFIG_GET) == 2
    config_server = next(s for s in spans if s.name == CONFIG_GET and s.kind.name == "SERVER")
    assert ancestors(config_server, by_id)[-1] == "client"
    assert CREATE_SESSION in ancestors(config_server, by_id)
    # SQL from both services, each under its own service's RPC span.
    config_sql = [s for s in spans if is_sql(s) and CONFIG_GET in ancestors(s, by_id)]
    session_sql = [
        s
        for s in spans
        if is_sql(s)
        and CONFIG_GET not in ancestors(s, by_id)
        and CREATE_SESSION in ancestors(s, by_id)
    ]
    assert config_sql, f"no ConfigService SQL in the trace: {names}"
    assert session_sql, f"no SessionService SQL in the trace: {names}"
    assert all(ancestors(s, by_id)[-1] == "client" for s in config_sql + session_sql)
    # Statements are recorded, parameters are not.
    assert any("SELECT" in str((s.attributes or {}).get("db.statement", "")) for s in config_sql)


async def test_health_checks_are_not_traced(traced: Traced) -> None:
    traced.spans.clear()
    async with grpc.aio.insecure_channel(traced.session_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(service=""))
    await traced.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
    names = [s.name for s in traced.spans.get_finished_spans()]
    assert "/tandem.session.v1.SessionService/ListSessions" in names
    assert not [n for n in names if "Health" in n]


async def test_a_turn_is_a_span_with_a_provider_call_and_each_tool_call(
    traced: Traced, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "note.txt").write_text("remember the milk")
    script = [
        {
            "reply": "Looking. ",
            "tool_calls": [{"name": "read_file", "arguments": {"path": str(root / "note.txt")}}],
        },
        {"reply": "Milk."},
    ]
    tools = [{"module": "tool-filesystem", "config": {"allowed_paths": [str(root)]}}]
    await create_config(traced, "turns", bundle({"script": script}, tools=tools))
    session = await traced.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="turns", start=True)
    )
    traced.spans.clear()
    events = await collect(
        traced.sessions.SendMessage(
            session_service_pb2.SendMessageRequest(session_id=session.session_id, content="hi")
        )
    )
    assert events[-1].HasField("turn_completed")
    await traced.session_app.runner.wait(events[0].turn_id)
    spans = traced.spans.get_finished_spans()
    turn = next(s for s in spans if s.name == "tandem.turn")
    assert (turn.attributes or {})["tandem.turn.id"] == events[0].turn_id
    assert (turn.attributes or {})["tandem.turn.status"] == "COMPLETED"
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == turn.context.span_id
    ]
    child_names = [s.name for s in children]
    assert child_names.count("tandem.provider.stream") == 2
    assert child_names.count("tandem.tool.call") == 1
    tool = next(s for s in children if s.name == "tandem.tool.call")
    assert (tool.attributes or {})["gen_ai.tool.name"] == "read_file"
    provider = next(s for s in children if s.name == "tandem.provider.stream")
    assert (provider.attributes or {})["gen_ai.system"] == "provider-echo"
    assert int((provider.attributes or {})["gen_ai.usage.output_tokens"]) > 0  # type: ignore[arg-type]
    # The turn belongs to the SendMessage call's trace.
    send = next(s for s in spans if s.name.endswith("/SendMessage") and s.kind.name == "SERVER")
    assert turn.context.trace_id == send.context.trace_id
    # Tool results and prompts stay out of spans.
    assert not any(
        "remember the milk" in str(value) for s in spans for value in (s.attributes or {}).values()
    )


def metric(reader: InMemoryMetricReader, name: str) -> Metric:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for found in scope.metrics:
                if found.name == name:
                    return found
    raise AssertionError(f"no metric {name}")


def points(found: Metric) -> Sequence[Any]:
    return list(found.data.data_points)


async def test_the_duration_metric_has_method_status_and_system(traced: Traced) -> None:
    await create_config(traced, "measured", bundle({}))
    for _ in range(3):
        await traced.configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="measured"))
    with pytest.raises(grpc.aio.AioRpcError):
        await traced.configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="missing"))
    # The server records a call once its status is sent, which can be just after the client
    # has it: wait for the refused call's point.
    missing_key = ("tandem.config.v1.ConfigService/GetConfig", "NOT_FOUND")
    for _ in range(100):
        duration = metric(traced.metrics, "rpc.server.call.duration")
        by_status: dict[tuple[Any, Any], Any] = {
            (p.attributes["rpc.method"], p.attributes["rpc.status_code"]): p
            for p in points(duration)
            if isinstance(p, HistogramDataPoint) and p.attributes is not None
        }
        if missing_key in by_status:
            break
        await asyncio.sleep(0.02)
    assert duration.unit == "s"
    ok = by_status[("tandem.config.v1.ConfigService/GetConfig", "OK")]
    missing = by_status[missing_key]
    # SessionService's own watcher also reads configs; the test's reads are at least these.
    assert ok.count >= 3
    assert missing.count == 1
    assert ok.attributes["rpc.system.name"] == "grpc"
    assert 0 < ok.sum / ok.count < 5  # seconds, not milliseconds
    assert not [p for p in points(duration) if "Health" in str(p.attributes["rpc.method"])]


async def test_turn_cache_and_stream_metrics(traced: Traced) -> None:
    await create_config(traced, "metered", bundle({}))
    session = await traced.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="metered", start=True)
    )
    events = await collect(
        traced.sessions.SendMessage(
            session_service_pb2.SendMessageRequest(session_id=session.session_id, content="hello")
        )
    )
    await traced.session_app.runner.wait(events[0].turn_id)
    usage = next(e.usage for e in events if e.HasField("usage"))
    durations = points(metric(traced.metrics, "tandem.turn.duration"))
    assert [(p.attributes["tandem.turn.status"], p.count) for p in durations] == [("COMPLETED", 1)]
    first = points(metric(traced.metrics, "tandem.turn.time_to_first_event"))
    assert sum(p.count for p in first) == 1
    tokens = {
        p.attributes["gen_ai.token.type"]: p.value
        for p in points(metric(traced.metrics, "tandem.turn.tokens"))
        if p.attributes["tandem.provider"] == "provider-echo"
    }
    assert tokens == {"input": usage.input_tokens, "output": usage.output_tokens}
    stats = traced.session_app.cache.stats()
    assert stats.misses >= 1
    for name, expected in (("misses", stats.misses), ("hits", stats.hits)):
        [point] = points(metric(traced.metrics, f"tandem.prepared_cache.{name}"))
        assert point.value == expected
    [active] = points(metric(traced.metrics, "tandem.turns.active"))
    assert active.value == 0

    # An open stream counts while it is open.
    follow = traced.sessions.StreamEvents(
        session_service_pb2.StreamEventsRequest(
            session_id=session.session_id, after_sequence=0, follow=True
        )
    )
    await follow.read()
    [open_streams] = points(metric(traced.metrics, "tandem.streams.open"))
    assert open_streams.value == 1
    follow.cancel()
    for _ in range(50):
        [open_streams] = points(metric(traced.metrics, "tandem.streams.open"))
        if open_streams.value == 0:
            break
        await asyncio.sleep(0.05)
    assert open_streams.value == 0
