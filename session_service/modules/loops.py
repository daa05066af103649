"""Orchestrator loops: how a turn alternates between model calls and tool calls.

Both run the same loop in the turn engine; they differ in how the reply reaches clients.
`loop-streaming` sends every text fragment as it arrives, `loop-basic` sends each model
call's text as one ContentDelta when that call ends.

Config keys (see CONFIG_KEYS), the same for both:
- `max_iterations`: model calls a turn may make (default: the bundle's
  `session.max_iterations`, else 10). A turn always has a bound, so Amplifier's -1
  ("unlimited") is refused.
- `tool_timeout_seconds`: how long one tool call may run (default 30).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from session_service.turns.protocols import LoopSettings

DEFAULT_TOOL_TIMEOUT_SECONDS = 30.0
LOOP_KEYS = frozenset({"max_iterations", "tool_timeout_seconds"})


def _settings(config: Mapping[str, Any], stream_deltas: bool) -> LoopSettings:
    max_iterations = config.get("max_iterations")
    if max_iterations is not None and (
        not isinstance(max_iterations, int)
        or isinstance(max_iterations, bool)
        or max_iterations < 1
    ):
        raise ValueError("max_iterations must be a positive integer")
    timeout = config.get("tool_timeout_seconds", DEFAULT_TOOL_TIMEOUT_SECONDS)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError("tool_timeout_seconds must be a positive number")
    return LoopSettings(max_iterations, float(timeout), stream_deltas)


class BasicLoop:
    """Runs provider and tool calls until the provider stops or max_iterations is reached."""

    CONFIG_KEYS: frozenset[str] = LOOP_KEYS

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.settings = _settings(config, stream_deltas=False)


class StreamingLoop:
    """Like loop-basic, streaming the reply to clients fragment by fragment."""

    CONFIG_KEYS: frozenset[str] = LOOP_KEYS

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.settings = _settings(config, stream_deltas=True)
