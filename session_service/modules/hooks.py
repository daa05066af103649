"""Logs turn and tool events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LoggingHook:
    """Logs turn and tool events."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
