"""Log records: JSON with trace ids, and no secret ever written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared import logging as tandem_logging
from shared.logging import Redactor, secret_values


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    env = {"OPENAI_API_KEY": "sk-live-abcdef123456", "TANDEM_DATABASE_URL": "x"}
    tandem_logging.configure_logging("INFO", "json", env)
    yield stream
    logging.basicConfig(handlers=[logging.NullHandler()], force=True)


def test_json_lines_carry_the_current_trace_and_span(captured: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("tandem.test").info("hello %s", "world")
    logging.getLogger("tandem.test").warning("outside")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    context = span.get_span_context()
    assert first["message"] == "hello world"
    assert first["level"] == "INFO"
    assert first["logger"] == "tandem.test"
    assert first["trace_id"] == format(context.trace_id, "032x")
    assert first["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in second


def test_secrets_from_the_environment_and_url_passwords_are_masked(
    captured: io.StringIO,
) -> None:
    log = logging.getLogger("tandem.test")
    log.info("calling with key %s", "sk-live-abcdef123456")
    log.info("database postgresql+psycopg://tandem:hunter2-pass@db:5432/tandem")
    try:
        raise RuntimeError("auth failed for sk-live-abcdef123456")
    except RuntimeError:
        log.exception("provider error")
    text = captured.getvalue()
    assert "sk-live-abcdef123456" not in text
    assert "hunter2-pass" not in text
    # The traceback shows the raising line too, so the key appears (masked) twice there.
    assert text.count("[REDACTED]") == 4
    assert "postgresql+psycopg://tandem:[REDACTED]@db:5432/tandem" in text


def test_text_format_is_redacted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    tandem_logging.configure_logging("INFO", "text", {"MY_TOKEN": "tok-0987654321"})
    try:
        logging.getLogger("t").info("token tok-0987654321")
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    assert "tok-0987654321" not in stream.getvalue()
    assert "token [REDACTED]" in stream.getvalue()


def test_only_secret_looking_variables_count_and_short_values_are_left_alone() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant-123456", "HOME": "/root", "DB_PASSWORD": "abc"}
    assert secret_values(env) == ["sk-ant-123456"]
    assert Redactor(["sk-ant-123456"])("a sk-ant-123456 b /root") == "a [REDACTED] b /root"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_database_error_is_logged_without_the_values_it_quotes(
    monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    tandem_logging.configure_logging("INFO", log_format, {})
    try:
        try:
            # What PostgreSQL says of a unique violation: it quotes the row's values.
            raise psycopg.errors.UniqueViolation(
                'duplicate key value violates unique constraint "pk"\n'
                "DETAIL:  Key (content)=(the user's private reply) already exists."
            )
        except psycopg.Error:
            logging.getLogger("tandem.test").exception("a write failed")
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    written = stream.getvalue()
    assert "a write failed" in written
    assert "UniqueViolation" in written
    assert "private reply" not in written
