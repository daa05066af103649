"""hooks-logging: one structured line per event, credentials masked."""

from __future__ import annotations

import logging

import pytest

from session_service.modules.hooks import LoggingHook


async def test_logs_event_and_data_with_secrets_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tandem.hooks")
    await LoggingHook({}).on_event(
        "tool_call_start",
        {
            "turn_id": "t-1",
            "name": "read_file",
            "API_KEY": "sk-live-123",
            "x-auth-token": "tok-456",
            "db_password": "hunter2",
            "Authorization": "Bearer abc",
            "client_secret": "shh",
            "nested": {"refresh_token": "r-789", "ok": 1},
        },
    )
    (record,) = caplog.records
    assert record.name == "tandem.hooks"
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert line.startswith("event=tool_call_start ")
    assert 'turn_id="t-1"' in line
    assert 'name="read_file"' in line
    assert '"ok": 1' in line
    for secret in ("sk-live-123", "tok-456", "hunter2", "Bearer abc", "shh", "r-789"):
        assert secret not in caplog.text
    assert line.count('"***"') == 6


@pytest.mark.parametrize(("configured", "level"), [("debug", logging.DEBUG), ("Error", 40)])
async def test_configured_level_is_used(
    caplog: pytest.LogCaptureFixture, configured: str, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="tandem.hooks")
    await LoggingHook({"log_level": configured}).on_event("turn_end", {"status": "COMPLETED"})
    (record,) = caplog.records
    assert record.levelno == level
    assert record.getMessage() == 'event=turn_end status="COMPLETED"'


async def test_below_the_logger_level_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tandem.hooks")
    await LoggingHook({"log_level": "info"}).on_event("turn_start", {})
    assert caplog.records == []


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot render")

    __repr__ = __str__


async def test_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tandem.hooks")
    hook = LoggingHook({})
    await hook.on_event("turn_start", {"value": _Unprintable()})
    await hook.on_event("turn_start", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["verbose", 10, ""])
def test_invalid_level_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="log_level"):
        LoggingHook({"log_level": value})
