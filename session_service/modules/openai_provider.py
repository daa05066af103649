"""Chat completions through the official openai SDK."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class OpenAIProvider:
    """Chat completions through the official openai SDK."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
