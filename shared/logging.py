"""Process-wide logging set-up, called by each service's entry point (never at import).

Records carry the current trace and span ids, so a log line leads to its trace. Before a
record is written, every secret the process knows of is masked in it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from shared.db.faults import describe_exception, involves_database

# Environment variables whose values are secrets (provider keys, tokens, passwords).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
# A password inside a URL: scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]+:)[^@\s/]+(?P<tail>@)", re.I)
_MASK = "[REDACTED]"
# Shorter values are too likely to occur in ordinary text to be masked safely.
_MIN_SECRET_LENGTH = 6


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values of env's secret-looking variables, longest first."""
    values = {
        value
        for name, value in env.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


class Redactor:
    """Masks known secret values and URL passwords in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [s for s in secrets if len(s) >= _MIN_SECRET_LENGTH]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        return _URL_PASSWORD.sub(rf"\g<head>{_MASK}\g<tail>", text)


class _TraceContext(logging.Filter):
    """Adds trace_id and span_id (empty outside a span) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redact: Redactor, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))

    def formatException(self, ei: Any) -> str:
        """A database error by its kind, codes and statement: its text can quote values."""
        error = ei[1] if isinstance(ei, tuple) else None
        if isinstance(error, BaseException) and involves_database(error):
            frames = "".join(traceback.format_tb(error.__traceback__)).rstrip()
            return f"{describe_exception(error)}\n{frames}"
        return super().formatException(ei)


class JsonFormatter(_RedactingFormatter):
    """One JSON object per line: time, level, logger, message, trace ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", "")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._redact(json.dumps(entry, ensure_ascii=False))


def configure_logging(
    level: str, log_format: str = "auto", env: Mapping[str, str] | None = None
) -> None:
    """JSON lines when not on a terminal (or when asked), plain text otherwise."""
    redact = Redactor(secret_values(os.environ if env is None else env))
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceContext())
    handler.setFormatter(
        JsonFormatter(redact)
        if use_json
        else _RedactingFormatter(redact, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
