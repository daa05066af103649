"""Reads, lists and writes files under configured roots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FilesystemTool:
    """Reads, lists and writes files under configured roots."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
