"""The instruction followed by the transcript."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SimpleContext:
    """The instruction followed by the transcript."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
