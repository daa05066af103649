"""After a run that really uses secrets, none of them is in a log, span, metric, row or response.

The run: API keys authenticate every call; a bundle references a provider key as `${VAR}`;
SessionService expands it and sends it to a local OpenAI-compatible server (which checks it
arrived); a later turn fails with the provider quoting the key back; a bad bearer is refused.
Then everything the deployment recorded or answered is searched for each secret.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from shared.db.engine import sync_url
from shared.telemetry.setup import Telemetry
from tests.support.llm_servers import (
    LlmServer,
    error,
    llm_server,
    openai_error_body,
    openai_text_reply,
    stream,
)
from tests.support.secured import KEYS, auth, secret, secured_stack
from tests.support.turns import collect


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


class Seen:
    """Everything the clients were answered, as text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, item: Any) -> Any:
        if isinstance(item, Message):
            self.texts.append(MessageToJson(item))
        elif isinstance(item, grpc.aio.AioRpcError):
            self.texts.append(f"{item.code()} {item.details()} {item.trailing_metadata()!r}")
        else:
            self.texts.append(repr(item))
        return item

    async def call(self, call: Any) -> Any:
        try:
            return self.add(await call)
        except grpc.aio.AioRpcError as refused:
            return self.add(refused)

    async def stream(self, call: Any) -> list[Any]:
        try:
            events = await collect(call)
        except grpc.aio.AioRpcError as refused:
            self.add(refused)
            return []
        for event in events:
            self.add(event)
        return events


def stored_rows(database_url: str) -> list[str]:
    """Every row of every table, as text."""
    engine = sa.create_engine(sync_url(database_url))
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            return [
                f"{table.name}: {row!r}"
                for table in metadata.sorted_tables
                for row in connection.execute(sa.select(table))
            ]
    finally:
        engine.dispose()


def span_texts(spans: InMemorySpanExporter) -> list[str]:
    return [span.to_json() for span in spans.get_finished_spans()]


@pytest.mark.timeout(90)
async def test_no_secret_reaches_logs_spans_metrics_rows_or_responses(
    database_url: str,
    tmp_path: Path,
    server: LlmServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider_key = "sk-proj-" + secrets.token_hex(20)
    monkeypatch.setenv("TANDEM_SCAN_PROVIDER_KEY", provider_key)
    caplog.set_level(logging.DEBUG)
    spans = InMemorySpanExporter()
    metrics = InMemoryMetricReader()
    telemetry = Telemetry.for_tests(SimpleSpanProcessor(spans), metrics)
    seen = Seen()
    document = (
        "---\n"
        + json.dumps(
            {
                "bundle": {"name": "scan"},
                "session": {"orchestrator": "loop-streaming"},
                "providers": [
                    {
                        "module": "provider-openai",
                        "config": {
                            "model": "gpt-test",
                            "base_url": f"{server.origin}/v1",
                            "max_retries": 0,
                            "api_key": "${TANDEM_SCAN_PROVIDER_KEY}",
                        },
                    }
                ],
            }
        )
        + "\n---\nYou are terse.\n"
    )
    server.script(
        stream(openai_text_reply(["All good."])),
        error(401, openai_error_body(f"Incorrect API key provided: {provider_key}.", "auth")),
    )
    async with secured_stack(database_url, tmp_path, telemetry=telemetry) as stack:
        writer = auth("a-writer")
        await seen.call(
            stack.configs.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="scan", config=config_pb2.Config(name="scan", yaml_content=document)
                ),
                metadata=writer,
            )
        )
        await seen.call(
            stack.configs.GetConfig(
                config_service_pb2.GetConfigRequest(config_id="scan"), metadata=writer
            )
        )
        await seen.call(
            stack.configs.ValidateConfig(
                config_service_pb2.ValidateConfigRequest(yaml_content=document), metadata=writer
            )
        )
        prepared = await seen.call(
            stack.sessions.PrepareConfig(
                session_service_pb2.PrepareConfigRequest(config_id="scan"), metadata=writer
            )
        )
        # The prepared bundle shows the reference, never its value.
        assert "${TANDEM_SCAN_PROVIDER_KEY}" in prepared.composed_yaml
        session = await seen.call(
            stack.sessions.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="scan", start=True),
                metadata=writer,
            )
        )
        # The provider answers the first turn and refuses the second, quoting the key.
        for content, end in (("Status?", "turn_completed"), ("Again?", "turn_failed")):
            request = session_service_pb2.SendMessageRequest(
                session_id=session.session_id, content=content
            )
            events = await seen.stream(stack.sessions.SendMessage(request, metadata=writer))
            assert events[-1].HasField(end)
        await seen.stream(
            stack.sessions.StreamEvents(
                session_service_pb2.StreamEventsRequest(
                    session_id=session.session_id, after_sequence=0, follow=False
                ),
                metadata=writer,
            )
        )
        await seen.call(
            stack.sessions.ListMessages(
                session_service_pb2.ListMessagesRequest(session_id=session.session_id),
                metadata=writer,
            )
        )
        await seen.call(
            stack.sessions.GetSession(
                session_service_pb2.GetSessionRequest(session_id=session.session_id),
                metadata=writer,
            )
        )
        revoked = await seen.call(
            stack.configs.GetConfig(
                config_service_pb2.GetConfigRequest(config_id="scan"),
                metadata=(("authorization", f"Bearer {provider_key}"),),
            )
        )
        assert revoked.code() is grpc.StatusCode.UNAUTHENTICATED
    # The secret was really used: expanded and sent to the provider on each turn.
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {provider_key}"] * 2

    logs = [
        f"{record.name} {record.getMessage()} {record.exc_text or ''} {record.__dict__!r}"
        for record in caplog.records
    ]
    metric_data = metrics.get_metrics_data()
    places = {
        "logs": logs,
        "spans": span_texts(spans),
        "metrics": [metric_data.to_json() if metric_data is not None else ""],
        "rows": stored_rows(database_url),
        "responses": seen.texts,
    }
    # Each place really holds the run, so an empty capture cannot pass for a clean one.
    assert any("scan" in text for text in places["rows"])
    assert any("tandem.turn" in text for text in places["spans"])
    assert any("Status?" in text for text in places["responses"])
    assert len(places["logs"]) > 0
    hunted = {"provider key": provider_key} | {f"API key {name}": secret(name) for name in KEYS}
    leaks = [
        f"{what} in {place}: {text[:300]}"
        for place, texts in places.items()
        for text in texts
        for what, value in hunted.items()
        if value in text
    ]
    assert not leaks, "\n".join(leaks)
