"""The offline, deterministic provider, for demos and tests.

Besides echoing the user, a `script` in its config plays back thinking, tool calls,
failures and stalls, so demos and tests can drive every path of a turn without a network.

Config keys (see CONFIG_KEYS):
- `reply`: the text of every reply (default: "echo: " and the last user message).
- `delay_ms`: a pause before each streamed token, to make streaming visible.
- `script`: one step per model call of a turn, each with `thinking`, `reply`, `tool_calls`,
  `fail` (a message, or `{code, message}`) and `stall` (never finish: for cancellation).
- `default_model`, or its alias `model`: the model named in usage reports (default "echo").
- `max_tokens`: the most tokens (words) a reply streams; a longer one stops there with the
  stop reason "max_tokens", as a real model's would.
- `temperature`: checked to be a number and otherwise ignored: echo is deterministic.
- `base_url`, `api_key`, `priority`: accepted so that a bundle can swap a real provider for
  echo without editing its config; echo connects nowhere and uses no credential.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from session_service.modules.settings import PROVIDER_KEYS, ProviderConfig, ProviderConfigError
from session_service.turns.protocols import (
    ChatMessage,
    Finish,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallRequest,
    UsageReport,
)

_TOKEN = re.compile(r"\S+\s*|\s+")
_STEP_KEYS = frozenset({"thinking", "reply", "tool_calls", "fail", "stall"})


def tokenize(text: str) -> list[str]:
    """Splits text into word tokens that keep their whitespace, so they join back exactly."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class _ScriptedCall:
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class _Failure:
    code: str
    message: str


@dataclass(frozen=True)
class _Step:
    thinking: str = ""
    reply: str | None = None
    tool_calls: tuple[_ScriptedCall, ...] = ()
    fail: _Failure | None = None
    stall: bool = False


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_fail(value: object, where: str) -> _Failure:
    if isinstance(value, str):
        return _Failure("PROVIDER_ERROR", value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a string or a mapping with a 'message'")
    unknown = sorted(str(key) for key in value if key not in ("code", "message"))
    if unknown:
        raise ValueError(f"{where} has unknown keys: {', '.join(unknown)}")
    message = value.get("message")
    if not isinstance(message, str):
        raise ValueError(f"{where}.message must be a string")
    code = value.get("code", "PROVIDER_ERROR")
    if not isinstance(code, str) or not code:
        raise ValueError(f"{where}.code must be a non-empty string")
    return _Failure(code, message)


def _parse_tool_calls(value: object, where: str) -> tuple[_ScriptedCall, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list")
    calls: list[_ScriptedCall] = []
    for index, entry in enumerate(value):
        entry_where = f"{where}[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{entry_where} must be a mapping with 'name' and 'arguments'")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{entry_where}.name must be a non-empty string")
        arguments = entry.get("arguments", {})
        if not isinstance(arguments, Mapping):
            raise ValueError(f"{entry_where}.arguments must be a mapping")
        try:
            json.dumps(arguments, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{entry_where}.arguments must be JSON-serialisable: {exc}") from None
        calls.append(_ScriptedCall(name, arguments))
    return tuple(calls)


def _parse_step(value: object, where: str) -> _Step:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping")
    unknown = sorted(str(key) for key in value if key not in _STEP_KEYS)
    if unknown:
        raise ValueError(
            f"{where} has unknown keys: {', '.join(unknown)}"
            + f" (allowed: {', '.join(sorted(_STEP_KEYS))})"
        )
    thinking = value.get("thinking", "")
    if not isinstance(thinking, str):
        raise ValueError(f"{where}.thinking must be a string")
    reply = value.get("reply")
    if reply is not None and not isinstance(reply, str):
        raise ValueError(f"{where}.reply must be a string")
    stall = value.get("stall", False)
    if not isinstance(stall, bool):
        raise ValueError(f"{where}.stall must be a boolean")
    fail = value.get("fail")
    return _Step(
        thinking=thinking,
        reply=reply,
        tool_calls=_parse_tool_calls(value.get("tool_calls", []), f"{where}.tool_calls"),
        fail=None if fail is None else _parse_fail(fail, f"{where}.fail"),
        stall=stall,
    )


def _step_index(messages: Sequence[ChatMessage]) -> int:
    """Counts assistant messages since the last user message: which model call of the turn."""
    count = 0
    for message in reversed(messages):
        if message.role == "user":
            break
        if message.role == "assistant":
            count += 1
    return count


def _input_tokens(request: ProviderRequest) -> int:
    """Words of the system prompt and messages: echo's stand-in for a tokenizer."""
    return len(request.system.split()) + sum(
        len(message.content.split()) for message in request.messages
    )


def _last_user_content(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""


class EchoProvider:
    """The offline, deterministic provider, for demos and tests."""

    name = "provider-echo"
    CONFIG_KEYS: frozenset[str] = PROVIDER_KEYS | {"reply", "delay_ms", "script"}

    def __init__(self, config: Mapping[str, Any]) -> None:
        read = ProviderConfig(self.name, config)
        # A config problem fails the turn as PROVIDER_CONFIG, naming the key, like any provider.
        try:
            self._configure(config, read)
        except ProviderConfigError:
            raise
        except ValueError as exc:
            raise ProviderConfigError(f"{self.name}: {exc}") from None

    def _configure(self, config: Mapping[str, Any], read: ProviderConfig) -> None:
        reply = config.get("reply")
        if reply is not None and not isinstance(reply, str):
            raise ValueError("reply must be a string")
        delay_ms = config.get("delay_ms", 0)
        if not _is_number(delay_ms) or not math.isfinite(delay_ms) or delay_ms < 0:
            raise ValueError("delay_ms must be a finite number >= 0")
        script = config.get("script", [])
        if script is None:
            script = []
        if not isinstance(script, list):
            raise ValueError("script must be a list of steps")
        self.model: str = read.optional_model("echo")
        self.max_tokens: int | None = read.optional_positive_int("max_tokens")
        # Checked like a real provider's would be, then ignored: the output never varies.
        read.optional_number("temperature")
        self.reply: str | None = reply
        self.delay_seconds = float(delay_ms) / 1000.0
        self.script: tuple[_Step, ...] = tuple(
            _parse_step(step, f"script[{index}]") for index, step in enumerate(script)
        )

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Streams one model call: thinking, reply text, tool calls, usage and finish."""
        index = _step_index(request.messages)
        step = self.script[index] if index < len(self.script) else _Step()
        text = step.reply
        if text is None:
            text = self.reply
        if text is None:
            text = "echo: " + _last_user_content(request.messages)

        output_tokens = 0
        tokens: list[ThinkingDelta | TextDelta] = [
            *(ThinkingDelta(token) for token in tokenize(step.thinking)),
            *(TextDelta(token) for token in tokenize(text)),
        ]
        # Thinking counts against max_tokens too, as it does for real models.
        truncated = self.max_tokens is not None and len(tokens) > self.max_tokens
        if truncated:
            tokens = tokens[: self.max_tokens]
        for delta in tokens:
            await self._pause()
            output_tokens += 1
            yield delta
        if truncated:
            # A reply cut off at the limit ends there: no failure, stall or tool calls follow.
            yield UsageReport(_input_tokens(request), output_tokens, self.model)
            yield Finish("max_tokens")
            return

        if step.fail is not None:
            raise ProviderError(step.fail.code, step.fail.message)
        if step.stall:
            # Never set: only cancellation (or closing the generator) ends the wait.
            await asyncio.Event().wait()

        for number, call in enumerate(step.tool_calls):
            yield ToolCallDelta(
                ToolCallRequest(
                    tool_call_id=f"call_{index}_{number}",
                    name=call.name,
                    arguments_json=json.dumps(call.arguments, sort_keys=True),
                )
            )
        yield UsageReport(_input_tokens(request), output_tokens, self.model)
        yield Finish("tool_use" if step.tool_calls else "end_turn")

    async def _pause(self) -> None:
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
