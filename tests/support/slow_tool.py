"""A tool that takes as long as its config says: a stand-in for a tool that hangs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from session_service.prepare.modules import ModuleRegistry
from session_service.turns.protocols import ToolResult, ToolSpec
from session_service.workspace import Sandbox
from tests.support.modules import installed_with


class SlowTool:
    """Offers `wait`, which sleeps `seconds` before answering."""

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        # Tools get the session sandbox; this one touches no files.
        del sandbox
        self.seconds = float(config.get("seconds", 60))

    def specs(self) -> Sequence[ToolSpec]:
        return (ToolSpec("wait", "Waits, then says so.", {"type": "object", "properties": {}}),)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        await asyncio.sleep(self.seconds)
        return ToolResult(f"waited {self.seconds:g}s")


def with_slow_tool() -> ModuleRegistry:
    """The installed modules plus `tool-slow`."""
    return installed_with({"tool": {"tool-slow": f"{__name__}:SlowTool"}})
