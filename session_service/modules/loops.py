"""Orchestrator loops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class BasicLoop:
    """Runs provider and tool calls until the provider stops or max_iterations is reached."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)


class StreamingLoop(BasicLoop):
    """BasicLoop, streaming each provider delta as it arrives."""
