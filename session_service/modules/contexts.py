"""context-simple: the instruction followed by the transcript, within a budget.

The system prompt is the instruction, then the turn's context (SendMessage.context) as
"- key: value" lines. The messages are the transcript, oldest first, trimmed from the oldest
end by these config keys (Amplifier's names; see CONFIG_KEYS):

- `max_messages`: at most this many messages are sent.
- `max_tokens`: the token budget of what is sent, the system prompt included. Tokens are
  estimated, not counted by the model's tokenizer: about 4 characters a token, plus a few per
  message for its framing. The oldest messages beyond the budget are left out.
- `auto_compact` (default true) and `compact_threshold` (a fraction in (0, 1], default 0.92):
  with auto_compact, once the estimate passes compact_threshold times max_tokens, the oldest
  messages are left out until it is back under that mark, so the rest of max_tokens stays
  free for the tool definitions and the reply. With auto_compact false, only max_tokens
  itself trims. Neither has any effect without max_tokens.

Trimming never separates an assistant message that asked for tools from the tool results
that answer it: they are kept or left out together, and a tool result whose call was left out
is left out too (providers refuse it). The newest message, with its tool results, is always
sent, even when it alone is over the budget: without it the model has nothing to answer.
Nothing is deleted: the stored transcript stays whole, and each model call trims afresh.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from session_service.turns.protocols import ChatMessage, TurnContext

CONTEXT_HEADING = "## Context for this turn"
CHARS_PER_TOKEN = 4
# Role markers and separators that every message costs besides its content.
MESSAGE_OVERHEAD_TOKENS = 4
DEFAULT_COMPACT_THRESHOLD = 0.92


def render_turn_context(turn_context: Mapping[str, Any]) -> str:
    """One "- key: value" line per item, keys sorted; non-string values as JSON."""
    lines: list[str] = []
    for key in sorted(turn_context, key=str):
        value = turn_context[key]
        if not isinstance(value, str):
            value = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def estimate_tokens(text: str) -> int:
    """An estimate of the tokens in text: about 4 characters each, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def message_tokens(message: ChatMessage) -> int:
    """An estimate of the tokens a message costs: its content, tool calls and framing."""
    total = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(message.content)
    total += estimate_tokens(message.tool_call_id)
    for call in message.tool_calls:
        total += (
            estimate_tokens(call.tool_call_id)
            + estimate_tokens(call.name)
            + estimate_tokens(call.arguments_json)
        )
    return total


def _units(messages: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """The messages in groups that are kept or dropped whole: a tool call with its results."""
    units: list[list[ChatMessage]] = []
    for message in messages:
        if message.role == "tool" and units and units[-1][0].tool_calls:
            units[-1].append(message)
        else:
            units.append([message])
    return units


def _without_orphans(messages: list[ChatMessage]) -> list[ChatMessage]:
    # A tool result whose assistant call was cut off would be rejected by providers.
    start = 0
    while start < len(messages) and messages[start].role == "tool":
        start += 1
    return messages[start:]


def _positive_int(config: Mapping[str, Any], key: str) -> int | None:
    value = config.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{key} must be a positive integer")
    return value


class SimpleContext:
    """The instruction followed by the transcript, trimmed to the configured budget."""

    CONFIG_KEYS: frozenset[str] = frozenset(
        {"max_messages", "max_tokens", "compact_threshold", "auto_compact"}
    )

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.max_messages: int | None = _positive_int(config, "max_messages")
        self.max_tokens: int | None = _positive_int(config, "max_tokens")
        threshold = config.get("compact_threshold")
        if threshold is None:
            threshold = DEFAULT_COMPACT_THRESHOLD
        if (
            not isinstance(threshold, int | float)
            or isinstance(threshold, bool)
            or not math.isfinite(threshold)
            or not 0 < threshold <= 1
        ):
            raise ValueError("compact_threshold must be a number above 0 and at most 1")
        self.compact_threshold = float(threshold)
        auto_compact = config.get("auto_compact")
        if auto_compact is None:
            auto_compact = True
        if not isinstance(auto_compact, bool):
            raise ValueError("auto_compact must be true or false")
        self.auto_compact: bool = auto_compact

    @property
    def token_limit(self) -> int | None:
        """The most tokens (estimated) that build() sends, or None for no limit."""
        if self.max_tokens is None:
            return None
        if self.auto_compact:
            return math.floor(self.max_tokens * self.compact_threshold)
        return self.max_tokens

    def build(self, context: TurnContext) -> tuple[str, Sequence[ChatMessage]]:
        """The system prompt (instruction plus turn context) and the messages to send."""
        system = context.instruction
        if context.turn_context:
            section = f"{CONTEXT_HEADING}\n{render_turn_context(context.turn_context)}"
            system = f"{system}\n\n{section}" if system else section
        messages = list(context.transcript)
        if self.max_messages is not None and len(messages) > self.max_messages:
            messages = _without_orphans(messages[-self.max_messages :])
        limit = self.token_limit
        if limit is not None:
            messages = self._within(messages, limit - estimate_tokens(system))
        return system, messages

    @staticmethod
    def _within(messages: list[ChatMessage], budget: int) -> list[ChatMessage]:
        """The newest whole units of messages whose estimate fits budget (at least one)."""
        if sum(message_tokens(message) for message in messages) <= budget:
            return messages
        units = _units(messages)
        kept: list[list[ChatMessage]] = []
        used = 0
        for unit in reversed(units):
            cost = sum(message_tokens(message) for message in unit)
            if kept and used + cost > budget:
                break
            kept.append(unit)
            used += cost
        trimmed = [message for unit in reversed(kept) for message in unit]
        return _without_orphans(trimmed) or trimmed
