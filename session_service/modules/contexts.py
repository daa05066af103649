"""The instruction followed by the transcript."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from session_service.turns.protocols import ChatMessage, TurnContext

CONTEXT_HEADING = "## Context for this turn"


def render_turn_context(turn_context: Mapping[str, Any]) -> str:
    """One "- key: value" line per item, keys sorted; non-string values as JSON."""
    lines: list[str] = []
    for key in sorted(turn_context, key=str):
        value = turn_context[key]
        if not isinstance(value, str):
            value = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


class SimpleContext:
    """The instruction followed by the transcript."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        max_messages = config.get("max_messages")
        if max_messages is not None and (
            not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1
        ):
            raise ValueError("max_messages must be a positive integer")
        self.max_messages: int | None = max_messages

    def build(self, context: TurnContext) -> tuple[str, Sequence[ChatMessage]]:
        """The system prompt (instruction plus turn context) and the messages to send."""
        system = context.instruction
        if context.turn_context:
            section = f"{CONTEXT_HEADING}\n{render_turn_context(context.turn_context)}"
            system = f"{system}\n\n{section}" if system else section
        messages = list(context.transcript)
        if self.max_messages is not None and len(messages) > self.max_messages:
            messages = messages[-self.max_messages :]
            # A tool result whose assistant call was cut off would be rejected by providers.
            while messages and messages[0].role == "tool":
                messages.pop(0)
        return system, messages
