"""Messages through the official anthropic SDK."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AnthropicProvider:
    """Messages through the official anthropic SDK."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
