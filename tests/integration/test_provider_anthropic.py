"""provider-anthropic end to end: the real anthropic SDK against a local messages server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest

from session_service.modules.anthropic_provider import AnthropicProvider
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
    ToolSpec,
    UsageReport,
)
from tests.support.llm_servers import (
    LlmServer,
    SseEvent,
    anthropic_error_body,
    anthropic_event,
    anthropic_message_end,
    anthropic_message_start,
    anthropic_ping,
    anthropic_text_block,
    anthropic_thinking_block,
    anthropic_tool_use_block,
    error,
    llm_server,
    stream,
)

API_KEY = "sk-ant-tandem-test-0123456789abcdef"
HELLO = ProviderRequest("You are terse.", [ChatMessage("user", "Say hello.")])


@pytest.fixture
def server() -> Iterator[LlmServer]:
    """A local messages server."""
    with llm_server() as running:
        yield running


def make_provider(server: LlmServer, **config: Any) -> AnthropicProvider:
    return AnthropicProvider(
        {
            "model": "claude-test",
            "api_key": API_KEY,
            "base_url": server.origin,
            "max_retries": 0,
            "timeout_seconds": 5,
            **config,
        }
    )


@pytest.fixture
async def provider(server: LlmServer) -> AsyncIterator[AnthropicProvider]:
    """provider-anthropic pointed at the local server, without retries."""
    created = make_provider(server)
    yield created
    await created.aclose()


def reply(
    *blocks: Sequence[SseEvent],
    stop_reason: str = "end_turn",
    input_tokens: int = 25,
    output_tokens: int = 9,
) -> list[SseEvent]:
    """A whole message: start, a ping, the blocks, the stop reason and usage, stop."""
    events = [anthropic_message_start(input_tokens), anthropic_ping()]
    for block in blocks:
        events.extend(block)
    return events + anthropic_message_end(stop_reason, output_tokens)


def sent_key(headers: Mapping[str, str]) -> str:
    """The key the SDK sent, in whichever header it authenticates with."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


async def collect(
    provider: AnthropicProvider, request: ProviderRequest = HELLO
) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request)]


async def until_failure(
    provider: AnthropicProvider, request: ProviderRequest = HELLO
) -> tuple[list[ProviderEvent], ProviderError]:
    """The events streamed before the ProviderError, and the error."""
    seen: list[ProviderEvent] = []
    try:
        async for event in provider.stream(request):
            seen.append(event)
    except ProviderError as exc:
        return seen, exc
    raise AssertionError(f"the stream did not fail: {seen}")


async def failure(provider: AnthropicProvider, request: ProviderRequest = HELLO) -> ProviderError:
    return (await until_failure(provider, request))[1]


async def test_streams_a_text_reply(server: LlmServer, provider: AnthropicProvider) -> None:
    server.script(stream(reply(anthropic_text_block(0, ["Hel", "lo", ", world"]))))

    events = await collect(provider)

    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta(", world"),
        UsageReport(input_tokens=25, output_tokens=9, model="claude-test"),
        Finish("end_turn"),
    ]
    assert await server.wait_for_completed_streams(1) == 1


async def test_thinking_then_text(server: LlmServer, provider: AnthropicProvider) -> None:
    events_sent = [
        anthropic_message_start(30, cache_read_input_tokens=70),
        *anthropic_thinking_block(0, ["The user", " wants a greeting."]),
        *anthropic_text_block(1, ["Hello."]),
        *anthropic_message_end("max_tokens", 12),
    ]
    server.script(stream(events_sent))

    events = await collect(provider)

    assert events == [
        ThinkingDelta("The user"),
        ThinkingDelta(" wants a greeting."),
        TextDelta("Hello."),
        # Cache reads count as input: the API reports them apart from input_tokens.
        UsageReport(input_tokens=100, output_tokens=12, model="claude-test"),
        Finish("max_tokens"),
    ]


async def test_assembles_tool_use_from_fragments(
    server: LlmServer, provider: AnthropicProvider
) -> None:
    server.script(
        stream(
            reply(
                anthropic_text_block(0, ["Let me look."]),
                anthropic_tool_use_block(
                    1, "toolu_read", "read_file", ['{"pa', 'th": "no', 'tes.txt"}']
                ),
                anthropic_tool_use_block(2, "toolu_time", "current_time", []),
                stop_reason="tool_use",
                output_tokens=48,
            )
        )
    )

    events = await collect(provider)

    assert events == [
        TextDelta("Let me look."),
        ToolCallDelta(ToolCallRequest("toolu_read", "read_file", '{"path": "notes.txt"}')),
        ToolCallDelta(ToolCallRequest("toolu_time", "current_time", "{}")),
        UsageReport(25, 48, "claude-test"),
        Finish("tool_use"),
    ]


async def test_request_body_maps_the_conversation(server: LlmServer) -> None:
    provider = make_provider(server, max_tokens=2048, temperature=0.3)
    server.script(stream(reply(anthropic_text_block(0, ["Done."]))))
    schema = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    request = ProviderRequest(
        system="You help with files.",
        messages=[
            ChatMessage("user", "Read a.txt and b.txt."),
            ChatMessage(
                "assistant",
                "Reading both.",
                tool_calls=(
                    ToolCallRequest("toolu_a", "read_file", '{"path": "a.txt"}'),
                    ToolCallRequest("toolu_b", "read_file", '{"path": "b.txt"}'),
                ),
            ),
            ChatMessage("tool", "alpha", tool_call_id="toolu_a"),
            ChatMessage("tool", "No such file: b.txt", tool_call_id="toolu_b", is_error=True),
            ChatMessage("assistant", "a.txt says alpha; b.txt is missing."),
            ChatMessage("user", "Thanks."),
        ],
        tools=[ToolSpec("read_file", "Reads a file.", schema)],
    )
    try:
        await collect(provider, request)
    finally:
        await provider.aclose()

    [sent] = server.requests
    assert sent.method == "POST"
    assert sent.path == "/v1/messages"
    assert sent_key(sent.headers) == API_KEY
    assert sent.headers["anthropic-version"]
    assert sent.body == {
        "model": "claude-test",
        "max_tokens": 2048,
        "stream": True,
        "temperature": 0.3,
        "system": "You help with files.",
        "messages": [
            {"role": "user", "content": "Read a.txt and b.txt."},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Reading both."},
                    {
                        "type": "tool_use",
                        "id": "toolu_a",
                        "name": "read_file",
                        "input": {"path": "a.txt"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_b",
                        "name": "read_file",
                        "input": {"path": "b.txt"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_a",
                        "content": "alpha",
                        "is_error": False,
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_b",
                        "content": "No such file: b.txt",
                        "is_error": True,
                    },
                ],
            },
            {"role": "assistant", "content": "a.txt says alpha; b.txt is missing."},
            {"role": "user", "content": "Thanks."},
        ],
        "tools": [
            {"name": "read_file", "description": "Reads a file.", "input_schema": schema},
        ],
    }


async def test_defaults_and_empty_parts_are_left_out(
    server: LlmServer, provider: AnthropicProvider
) -> None:
    server.script(stream(reply(anthropic_text_block(0, ["Hi."]))))

    await collect(provider, ProviderRequest("", [ChatMessage("user", "Hi.")]))

    body = server.requests[0].body
    assert body["max_tokens"] == 1024
    assert body["messages"] == [{"role": "user", "content": "Hi."}]
    for absent in ("system", "tools", "temperature"):
        assert absent not in body


@pytest.mark.parametrize(
    "names",
    [
        {"default_model": "some-model"},
        {"model": "some-model"},
        {"default_model": "some-model", "model": "some-model"},
    ],
)
async def test_default_model_is_the_model_the_server_is_asked_for(
    server: LlmServer, names: dict[str, str]
) -> None:
    # Amplifier's provider files say default_model; `model` is its alias. A priority is
    # preparation's business: the provider accepts it and sends nothing for it.
    provider = AnthropicProvider(
        {
            **names,
            "api_key": API_KEY,
            "base_url": server.origin,
            "max_retries": 0,
            "priority": 1,
        }
    )
    server.script(stream(reply(anthropic_text_block(0, ["Hi."]))))
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()

    assert server.requests[0].body["model"] == "some-model"
    assert "priority" not in server.requests[0].body
    assert events[-1] == Finish("end_turn")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (
            {"default_model": "claude-a", "model": "claude-b", "api_key": API_KEY},
            ("default_model", "model", "claude-a", "claude-b"),
        ),
        (
            {"default_model": "claude-a", "api_key": API_KEY, "timeout": 5, "timeout_seconds": 6},
            ("timeout_seconds", "timeout"),
        ),
    ],
)
def test_a_key_and_its_alias_that_differ_are_refused_naming_both(
    config: dict[str, Any], named: tuple[str, ...]
) -> None:
    with pytest.raises(ProviderError) as caught:
        AnthropicProvider(config)

    assert caught.value.code == "PROVIDER_CONFIG"
    for fragment in named:
        assert fragment in caught.value.message


async def test_timeout_under_amplifiers_name_bounds_a_silent_server(server: LlmServer) -> None:
    provider = AnthropicProvider(
        {
            "default_model": "claude-test",
            "api_key": API_KEY,
            "base_url": server.origin,
            "max_retries": 0,
            "timeout": 0.3,
        }
    )
    server.script(stream([SseEvent('{"type": "ping"}', event="ping", delay=3600)]))
    try:
        # The server stays silent for an hour: only the timeout can end the call (wait_for
        # only fails a hung test).
        raised = await asyncio.wait_for(failure(provider), 30)
    finally:
        await provider.aclose()

    assert raised.code == "PROVIDER_UNAVAILABLE"


@pytest.mark.parametrize(
    ("status", "error_type", "code", "retryable"),
    [
        (429, "rate_limit_error", "PROVIDER_RATE_LIMITED", True),
        (500, "api_error", "PROVIDER_UNAVAILABLE", True),
        (529, "overloaded_error", "PROVIDER_UNAVAILABLE", True),
        (401, "authentication_error", "PROVIDER_AUTH", False),
        (403, "permission_error", "PROVIDER_AUTH", False),
        (400, "invalid_request_error", "PROVIDER_BAD_REQUEST", False),
        (413, "request_too_large", "PROVIDER_BAD_REQUEST", False),
    ],
)
async def test_http_errors_become_provider_errors(
    server: LlmServer,
    provider: AnthropicProvider,
    status: int,
    error_type: str,
    code: str,
    retryable: bool,
) -> None:
    # Even if an error quoted the key back, it must not reach our message.
    server.script(error(status, anthropic_error_body(f"Trouble with key {API_KEY}.", error_type)))

    raised = await failure(provider)

    assert raised.code == code
    assert raised.retryable is retryable
    assert f"HTTP {status}" in raised.message
    assert f"Trouble with key [redacted]. ({error_type})" in raised.message
    assert API_KEY not in raised.message
    assert API_KEY not in str(raised)
    assert len(server.requests) == 1


async def test_max_retries_is_passed_to_the_sdk(server: LlmServer) -> None:
    provider = make_provider(server, max_retries=1)
    server.script(
        error(529, anthropic_error_body("Overloaded", "overloaded_error")),
        stream(reply(anthropic_text_block(0, ["Hi."]))),
    )
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()

    assert events[-1] == Finish("end_turn")
    assert len(server.requests) == 2


async def test_error_event_inside_the_stream(
    server: LlmServer, provider: AnthropicProvider
) -> None:
    server.script(
        stream(
            [
                anthropic_message_start(10),
                *anthropic_text_block(0, ["Part"])[:2],
                anthropic_event(anthropic_error_body("Overloaded", "overloaded_error")),
            ]
        )
    )

    seen, raised = await until_failure(provider)

    assert seen == [TextDelta("Part")]
    assert raised.code == "PROVIDER_ERROR"
    assert "Overloaded (overloaded_error)" in raised.message
    assert API_KEY not in raised.message


async def test_connection_dropped_mid_stream(
    server: LlmServer, provider: AnthropicProvider
) -> None:
    server.script(
        stream([anthropic_message_start(10), *anthropic_text_block(0, ["Part"])[:2]], abort=True)
    )

    seen, raised = await until_failure(provider)

    assert seen == [TextDelta("Part")]
    assert raised.code == "PROVIDER_UNAVAILABLE"
    assert raised.retryable


async def test_stream_ending_without_message_stop(
    server: LlmServer, provider: AnthropicProvider
) -> None:
    server.script(stream([anthropic_message_start(10), *anthropic_text_block(0, ["Part"])]))

    raised = await failure(provider)

    assert raised.code == "PROVIDER_ERROR"


async def test_unreachable_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = AnthropicProvider(
        {
            "model": "claude-test",
            "api_key": API_KEY,
            "base_url": f"http://127.0.0.1:{port}",
            "max_retries": 0,
        }
    )
    try:
        raised = await failure(provider)
    finally:
        await provider.aclose()

    assert raised.code == "PROVIDER_UNAVAILABLE"
    assert raised.retryable
    assert API_KEY not in raised.message


def slow_reply() -> list[SseEvent]:
    return [
        anthropic_message_start(10),
        *anthropic_text_block(0, ["First"])[:2],
        anthropic_ping(),
        SseEvent('{"type": "ping"}', event="ping", delay=3600),
        *anthropic_message_end("end_turn", 3),
    ]


async def test_closing_the_stream_closes_the_connection(
    server: LlmServer, provider: AnthropicProvider
) -> None:
    server.script(stream(slow_reply()))
    events = provider.stream(HELLO)

    assert await anext(events) == TextDelta("First")
    # The rest of the reply is an hour away: closing must not wait for it.
    await asyncio.wait_for(events.aclose(), 30)

    assert await server.wait_for_disconnect(1.0)
    assert server.completed_streams == 0


async def test_cancelling_the_consumer_closes_the_connection(
    server: LlmServer, provider: AnthropicProvider
) -> None:
    server.script(stream(slow_reply()))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(HELLO):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await server.wait_for_disconnect(1.0)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"model": None},
        {"model": ["claude-test"]},
        {"model": "claude-test", "max_tokens": 0},
        {"model": "claude-test", "timeout_seconds": "soon"},
    ],
)
def test_invalid_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as caught:
        AnthropicProvider(config)

    assert caught.value.code == "PROVIDER_CONFIG"


async def test_the_server_environment_is_never_a_credential(
    server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tenant's bundle that names no key must not be handed the operator's.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-environment")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "token-from-environment")
    with pytest.raises(ProviderError) as caught:
        AnthropicProvider({"model": "claude-test", "base_url": server.origin})
    assert caught.value.code == "PROVIDER_AUTH"
    assert "from-environment" not in caught.value.message
    assert server.requests == []


async def test_no_credentials_in_the_config(server: LlmServer) -> None:
    with pytest.raises(ProviderError) as caught:
        AnthropicProvider({"model": "claude-test", "base_url": server.origin})
    assert caught.value.code == "PROVIDER_AUTH"
    # The message says how to give one, naming the usual variable.
    assert "ANTHROPIC_API_KEY" in caught.value.message
    assert server.requests == []
