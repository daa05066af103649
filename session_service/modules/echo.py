"""The offline, deterministic provider; the embedded default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class EchoProvider:
    """The offline, deterministic provider; the embedded default."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
