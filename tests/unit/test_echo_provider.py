"""provider-echo: the offline provider that demos and turn-engine tests rely on."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from session_service.modules.echo import EchoProvider, tokenize
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


def _request(*messages: ChatMessage, system: str = "") -> ProviderRequest:
    return ProviderRequest(system=system, messages=messages)


async def _collect(provider: EchoProvider, request: ProviderRequest) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request)]


async def _drain(stream: AsyncIterator[ProviderEvent], into: list[ProviderEvent]) -> None:
    async for event in stream:
        into.append(event)


def _text(events: Sequence[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _of(kind: type[Any], events: Sequence[ProviderEvent]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def _tool_round(step: int) -> tuple[ChatMessage, ChatMessage]:
    call = ToolCallRequest(f"call_{step}_0", "read_file", "{}")
    return (
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "result", tool_call_id=call.tool_call_id),
    )


async def test_default_reply_echoes_the_last_user_message() -> None:
    provider = EchoProvider({})
    events = await _collect(
        provider,
        _request(
            ChatMessage("user", "first"),
            ChatMessage("assistant", "echo: first"),
            ChatMessage("user", "hello  there\nworld "),
        ),
    )
    assert _text(events) == "echo: hello  there\nworld "
    assert isinstance(events[-1], Finish)
    assert events[-1].stop_reason == "end_turn"
    assert isinstance(events[-2], UsageReport)
    assert provider.name == "provider-echo"


async def test_without_a_user_message_the_echo_is_empty() -> None:
    events = await _collect(EchoProvider({}), _request())
    assert _text(events) == "echo: "


@pytest.mark.parametrize(
    "text",
    ["", "one", "  leading", "trailing  ", "a\tb\n\nc  d", "   ", "x y z "],
)
def test_tokens_keep_their_whitespace(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(token for token in tokens)


async def test_one_text_delta_per_token_and_configured_reply() -> None:
    provider = EchoProvider({"reply": "Hello,  brave new\nworld!", "model": "m-1"})
    events = await _collect(provider, _request(ChatMessage("user", "ignored")))
    deltas = [e.text for e in _of(TextDelta, events)]
    assert deltas == ["Hello,  ", "brave ", "new\n", "world!"]
    assert _text(events) == "Hello,  brave new\nworld!"


async def test_usage_counts_input_words_and_streamed_tokens() -> None:
    provider = EchoProvider(
        {"model": "echo-test", "script": [{"thinking": "let me think", "reply": "a b c d"}]}
    )
    request = _request(
        ChatMessage("user", "two words"),
        system="you are   helpful",
    )
    events = await _collect(provider, request)
    (usage,) = _of(UsageReport, events)
    # 3 system words + 2 message words; 3 thinking tokens + 4 text tokens.
    assert usage == UsageReport(input_tokens=5, output_tokens=7, model="echo-test")
    assert [type(e) for e in events] == [ThinkingDelta] * 3 + [TextDelta] * 4 + [
        UsageReport,
        Finish,
    ]
    assert "".join(e.text for e in _of(ThinkingDelta, events)) == "let me think"


async def test_default_model_is_echo() -> None:
    events = await _collect(EchoProvider({}), _request(ChatMessage("user", "hi")))
    (usage,) = _of(UsageReport, events)
    assert usage.model == "echo"
    assert usage.output_tokens == 2


@pytest.mark.parametrize(
    "names",
    [
        {"default_model": "echo-large"},
        {"model": "echo-large"},
        {"default_model": "echo-large", "model": "echo-large"},
    ],
)
async def test_default_model_or_its_alias_names_the_model(names: Mapping[str, Any]) -> None:
    events = await _collect(EchoProvider(names), _request(ChatMessage("user", "hi")))
    (usage,) = _of(UsageReport, events)
    assert usage.model == "echo-large"


def test_default_model_and_a_different_model_are_refused_naming_both() -> None:
    with pytest.raises(ProviderError) as raised:
        EchoProvider({"default_model": "echo-a", "model": "echo-b"})
    assert raised.value.code == "PROVIDER_CONFIG"
    for fragment in ("default_model", "model", "echo-a", "echo-b"):
        assert fragment in raised.value.message


async def test_max_tokens_cuts_the_reply_like_a_real_model() -> None:
    provider = EchoProvider(
        {
            "max_tokens": 4,
            "script": [
                {
                    "thinking": "hmm",
                    "reply": "one two three four",
                    "tool_calls": [{"name": "read_file", "arguments": {}}],
                }
            ],
        }
    )
    events = await _collect(provider, _request(ChatMessage("user", "go")))
    # Thinking counts too; a cut-off reply asks for no tools.
    assert [type(e) for e in events] == [ThinkingDelta] + [TextDelta] * 3 + [UsageReport, Finish]
    assert _text(events) == "one two three "
    assert events[-1] == Finish("max_tokens")
    (usage,) = _of(UsageReport, events)
    assert usage.output_tokens == 4


async def test_a_reply_within_max_tokens_is_whole() -> None:
    provider = EchoProvider({"max_tokens": 3, "reply": "a b c"})
    events = await _collect(provider, _request(ChatMessage("user", "go")))
    assert _text(events) == "a b c"
    assert events[-1] == Finish("end_turn")


async def test_keys_of_real_providers_are_accepted_so_echo_can_stand_in() -> None:
    # A bundle swaps provider-openai for provider-echo without editing its config.
    provider = EchoProvider(
        {
            "default_model": "gpt-test",
            "base_url": "https://api.openai.com/v1",
            "api_key": "sk-not-used",
            "priority": 5,
            "temperature": 0.7,
            "max_tokens": 100,
        }
    )
    events = await _collect(provider, _request(ChatMessage("user", "hi")))
    assert _text(events) == "echo: hi"


async def test_delay_is_honoured_per_token() -> None:
    provider = EchoProvider({"reply": "a b c d e", "delay_ms": 20})
    started = time.monotonic()
    await _collect(provider, _request(ChatMessage("user", "hi")))
    # Five tokens at 20 ms each; the upper bound only guards against a runaway sleep.
    assert 0.09 <= time.monotonic() - started < 5


async def test_cancellation_stops_a_slow_stream_at_once() -> None:
    provider = EchoProvider({"reply": "a b c", "delay_ms": 60_000})
    task = asyncio.create_task(_collect(provider, _request(ChatMessage("user", "hi"))))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1


async def test_script_step_is_chosen_by_assistant_messages_since_the_last_user() -> None:
    provider = EchoProvider(
        {
            "reply": "fallback",
            "script": [{"reply": "step zero"}, {"reply": "step one"}, {"thinking": "hm"}],
        }
    )
    earlier_turn = (
        ChatMessage("user", "old"),
        ChatMessage("assistant", "old reply"),
        ChatMessage("assistant", "more old"),
    )
    step0 = (*earlier_turn, ChatMessage("user", "now"))
    step1 = (*step0, *_tool_round(0))
    step2 = (*step1, *_tool_round(1))
    step3 = (*step2, *_tool_round(2))
    assert _text(await _collect(provider, _request(*step0))) == "step zero"
    assert _text(await _collect(provider, _request(*step1))) == "step one"
    # A step without `reply` falls back to the configured reply.
    assert _text(await _collect(provider, _request(*step2))) == "fallback"
    # Past the end of the script: as if there were no script.
    assert _text(await _collect(provider, _request(*step3))) == "fallback"


async def test_past_the_script_without_a_reply_echoes_the_user() -> None:
    provider = EchoProvider({"script": [{"reply": "only"}]})
    request = _request(ChatMessage("user", "ping"), *_tool_round(0))
    assert _text(await _collect(provider, request)) == "echo: ping"


async def test_tool_calls_get_step_ids_and_sorted_json_arguments() -> None:
    arguments = {"path": "notes.txt", "b": [1, 2], "a": {"z": 1, "y": None}}
    provider = EchoProvider(
        {
            "script": [
                {"reply": "Looking.", "tool_calls": [{"name": "noop", "arguments": {}}]},
                {
                    "reply": "",
                    "tool_calls": [
                        {"name": "read_file", "arguments": arguments},
                        {"name": "list_directory", "arguments": {"path": "."}},
                    ],
                },
            ]
        }
    )
    first = await _collect(provider, _request(ChatMessage("user", "go")))
    assert _text(first) == "Looking."
    (call,) = [e.call for e in _of(ToolCallDelta, first)]
    assert call == ToolCallRequest("call_0_0", "noop", "{}")
    assert isinstance(first[-1], Finish)
    assert first[-1].stop_reason == "tool_use"

    second = await _collect(provider, _request(ChatMessage("user", "go"), *_tool_round(0)))
    assert _of(TextDelta, second) == []
    calls = [e.call for e in _of(ToolCallDelta, second)]
    assert [(c.tool_call_id, c.name) for c in calls] == [
        ("call_1_0", "read_file"),
        ("call_1_1", "list_directory"),
    ]
    assert calls[0].arguments_json == json.dumps(arguments, sort_keys=True)
    assert json.loads(calls[0].arguments_json) == arguments
    # Tool calls come after the text and before usage and finish.
    assert [type(e) for e in second] == [ToolCallDelta, ToolCallDelta, UsageReport, Finish]
    assert second[-1] == Finish("tool_use")


async def test_fail_raises_after_the_steps_text() -> None:
    provider = EchoProvider(
        {"script": [{"reply": "partial text", "fail": {"code": "RATE_LIMITED", "message": "slow"}}]}
    )
    seen: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as raised:
        await _drain(provider.stream(_request(ChatMessage("user", "hi"))), seen)
    assert raised.value.code == "RATE_LIMITED"
    assert raised.value.message == "slow"
    assert _text(seen) == "partial text"
    assert _of(UsageReport, seen) == []
    assert _of(Finish, seen) == []


async def test_fail_as_a_plain_message_uses_the_default_code() -> None:
    provider = EchoProvider({"script": [{"reply": "", "fail": "boom"}]})
    with pytest.raises(ProviderError) as raised:
        await _collect(provider, _request(ChatMessage("user", "hi")))
    assert raised.value.code == "PROVIDER_ERROR"
    assert raised.value.message == "boom"


async def test_stall_never_finishes_and_can_be_closed() -> None:
    provider = EchoProvider({"script": [{"reply": "waiting", "stall": True}]})
    stream = provider.stream(_request(ChatMessage("user", "hi")))
    assert await anext(stream) == TextDelta("waiting")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), 0.2)
    await stream.aclose()
    # A second stream stalls too, and closing it mid-wait returns promptly.
    collecting = asyncio.create_task(_collect(provider, _request(ChatMessage("user", "hi"))))
    done, _ = await asyncio.wait({collecting}, timeout=0.2)
    assert not done
    collecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await collecting


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"reply": 3}, "reply"),
        ({"delay_ms": -1}, "delay_ms"),
        ({"delay_ms": "10"}, "delay_ms"),
        ({"delay_ms": True}, "delay_ms"),
        ({"delay_ms": float("nan")}, "delay_ms"),
        ({"model": 1}, "model"),
        ({"default_model": ""}, "default_model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"script": {"reply": "x"}}, "script"),
        ({"script": ["x"]}, "script[0]"),
        ({"script": [{}, {"reply": 5}]}, "script[1].reply"),
        ({"script": [{"thinking": ["a"]}]}, "script[0].thinking"),
        ({"script": [{"stall": "yes"}]}, "script[0].stall"),
        ({"script": [{"tool_calls": {"name": "x"}}]}, "script[0].tool_calls"),
        ({"script": [{"tool_calls": ["x"]}]}, "script[0].tool_calls[0]"),
        ({"script": [{"tool_calls": [{"arguments": {}}]}]}, "script[0].tool_calls[0].name"),
        (
            {"script": [{"tool_calls": [{"name": "x", "arguments": [1]}]}]},
            "script[0].tool_calls[0].arguments",
        ),
        ({"script": [{"fail": 42}]}, "script[0].fail"),
        ({"script": [{"fail": {"code": "X"}}]}, "script[0].fail.message"),
        ({"script": [{"replly": "typo"}]}, "replly"),
    ],
)
def test_invalid_config_is_refused_naming_the_key(config: Mapping[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=re.escape(names)) as raised:
        EchoProvider(config)
    # The turn then fails as PROVIDER_CONFIG, like any provider's bad setting.
    assert isinstance(raised.value, ProviderError)
    assert raised.value.code == "PROVIDER_CONFIG"


def test_valid_config_is_accepted() -> None:
    provider = EchoProvider(
        {
            "reply": "",
            "delay_ms": 1.5,
            "model": "m",
            "script": [
                {},
                {"thinking": "t", "reply": "r", "tool_calls": [{"name": "n", "arguments": {}}]},
                {"fail": {"message": "m"}},
                {"stall": False},
            ],
        }
    )
    assert provider.model == "m"
    assert len(provider.script) == 4
