"""Hooks that only draw in a terminal (`hooks-todo-display`, `hooks-streaming-ui`).

A server has no terminal: clients draw from the event stream instead. These modules are
installed so that bundles using them prepare unchanged, do nothing, and PrepareConfig warns
about each (their NOTICE). They read no config keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from session_service.turns.protocols import HookResult
from session_service.workspace import Sandbox


class DisplayOnlyHook:
    """Does nothing: what it would draw, clients draw from StreamEvents."""

    NOTICE = (
        "only draws in a terminal, and a server has none, so it does nothing here;"
        " clients show the same from StreamEvents"
    )
    CONFIG_KEYS: frozenset[str] = frozenset()

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        del config, sandbox

    async def on_event(self, event: str, data: Mapping[str, Any]) -> HookResult | None:
        """Nothing to do."""
        return None
