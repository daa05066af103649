"""Names a session from its first exchange (`hooks-session-naming`).

When a turn completes and the session has no display_name yet, it gets one made from the
first user message: its first line, whitespace collapsed, cut at a word to fit. No model is
called for it, so naming costs nothing and never fails a turn. A name a client set (on
CreateSession) is never replaced.

Config keys (Amplifier's names):
- `initial_trigger_turn`: name the session once this many user turns have completed
  (default 1: after the first exchange).
- `max_name_length`: the longest name, in characters (default 50).
`update_interval_turns`, `max_description_length`, `max_retries` and `model_role` drive a
model-written description elsewhere; this module writes none, so it does not read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from session_service.turns.protocols import HookResult
from session_service.workspace import Sandbox

DEFAULT_MAX_LENGTH = 50
_TRAILING = " \t.,;:!?-\u2013\u2014"


def name_from(message: str, max_length: int) -> str:
    """A one-line name for a conversation that starts with message ("" if it has no text)."""
    first_line = next((line for line in message.splitlines() if line.strip()), "")
    # Control characters would not show in a listing; they become spaces first.
    cleaned = "".join(char if char.isprintable() else " " for char in first_line)
    text = " ".join(cleaned.split())
    if len(text) <= max_length:
        return text.rstrip(_TRAILING) or text
    cut = text[: max_length - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(_TRAILING) + "…"


def _positive(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer")
    return value


class SessionNamingHook:
    """At the end of a completed turn, offers a display name for an unnamed session."""

    CONFIG_KEYS: frozenset[str] = frozenset({"initial_trigger_turn", "max_name_length"})

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        del sandbox  # the name is stored with the session, by the turn
        self._trigger = _positive(config, "initial_trigger_turn", 1)
        # Within what a display name may hold.
        self._max_length = min(_positive(config, "max_name_length", DEFAULT_MAX_LENGTH), 256)

    async def on_event(self, event: str, data: Mapping[str, Any]) -> HookResult | None:
        """The name, once enough user turns have completed."""
        if event != "turn_ending" or data.get("status") != "COMPLETED":
            return None
        turns = data.get("user_turns", 0)
        if not isinstance(turns, int) or turns < self._trigger:
            return None
        name = name_from(str(data.get("first_user_message", "")), self._max_length)
        return HookResult(session_name=name) if name else None
