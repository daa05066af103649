"""provider-openai end to end: the real openai SDK against a local chat-completions server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from session_service.modules.openai_provider import PLACEHOLDER_API_KEY, OpenAIProvider
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
    error,
    llm_server,
    openai_chunk,
    openai_done,
    openai_error_body,
    openai_text_reply,
    openai_tool_call_arguments,
    openai_tool_call_start,
    openai_usage,
    stream,
)

API_KEY = "sk-tandem-test-0123456789abcdef"
HELLO = ProviderRequest("You are terse.", [ChatMessage("user", "Say hello.")])


@pytest.fixture
def server() -> Iterator[LlmServer]:
    """A local chat-completions server."""
    with llm_server() as running:
        yield running


def make_provider(server: LlmServer, **config: Any) -> OpenAIProvider:
    return OpenAIProvider(
        {
            "model": "gpt-test",
            "api_key": API_KEY,
            "base_url": f"{server.origin}/v1",
            "max_retries": 0,
            "timeout_seconds": 5,
            **config,
        }
    )


@pytest.fixture
async def provider(server: LlmServer) -> AsyncIterator[OpenAIProvider]:
    """provider-openai pointed at the local server, without retries."""
    created = make_provider(server)
    yield created
    await created.aclose()


async def collect(
    provider: OpenAIProvider, request: ProviderRequest = HELLO
) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request)]


async def until_failure(
    provider: OpenAIProvider, request: ProviderRequest = HELLO
) -> tuple[list[ProviderEvent], ProviderError]:
    """The events streamed before the ProviderError, and the error."""
    seen: list[ProviderEvent] = []
    try:
        async for event in provider.stream(request):
            seen.append(event)
    except ProviderError as exc:
        return seen, exc
    raise AssertionError(f"the stream did not fail: {seen}")


async def failure(provider: OpenAIProvider, request: ProviderRequest = HELLO) -> ProviderError:
    return (await until_failure(provider, request))[1]


async def test_streams_a_text_reply(server: LlmServer, provider: OpenAIProvider) -> None:
    server.script(
        stream(
            openai_text_reply(
                ["Hel", "lo", ", world"], prompt_tokens=21, completion_tokens=4, model="gpt-test-01"
            )
        )
    )

    events = await collect(provider)

    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta(", world"),
        UsageReport(input_tokens=21, output_tokens=4, model="gpt-test-01"),
        Finish("stop"),
    ]
    assert await server.wait_for_completed_streams(1) == 1


async def test_assembles_parallel_tool_calls_from_fragments(
    server: LlmServer, provider: OpenAIProvider
) -> None:
    server.script(
        stream(
            [
                openai_chunk({"role": "assistant", "content": None}),
                openai_tool_call_start(0, "call_read", "read_file"),
                openai_tool_call_arguments(0, '{"pa'),
                openai_tool_call_start(1, "call_list", "list_directory"),
                openai_tool_call_arguments(0, 'th": "notes'),
                openai_tool_call_arguments(1, '{"path"'),
                openai_tool_call_arguments(0, '.txt"}'),
                openai_tool_call_arguments(1, ': "."}'),
                openai_chunk({}, finish_reason="tool_calls"),
                openai_usage(40, 22),
                openai_done(),
            ]
        )
    )

    events = await collect(provider)

    assert events == [
        ToolCallDelta(ToolCallRequest("call_read", "read_file", '{"path": "notes.txt"}')),
        ToolCallDelta(ToolCallRequest("call_list", "list_directory", '{"path": "."}')),
        UsageReport(40, 22, "gpt-test"),
        Finish("tool_calls"),
    ]


async def test_tool_call_without_arguments_gets_an_empty_object(
    server: LlmServer, provider: OpenAIProvider
) -> None:
    server.script(
        stream(
            [
                openai_chunk({"content": "Checking."}),
                openai_tool_call_start(0, "call_now", "current_time"),
                openai_chunk({}, finish_reason="tool_calls"),
                openai_done(),
            ]
        )
    )

    events = await collect(provider)

    assert events == [
        TextDelta("Checking."),
        ToolCallDelta(ToolCallRequest("call_now", "current_time", "{}")),
        Finish("tool_calls"),
    ]


async def test_reasoning_deltas_become_thinking(
    server: LlmServer, provider: OpenAIProvider
) -> None:
    server.script(
        stream(
            [
                openai_chunk({"role": "assistant", "content": "", "reasoning_content": "Two"}),
                openai_chunk({"content": None, "reasoning_content": " plus two."}),
                openai_chunk({"content": "4"}),
                openai_chunk({}, finish_reason="length"),
                openai_done(),
            ]
        )
    )

    events = await collect(provider)

    assert events == [
        ThinkingDelta("Two"),
        ThinkingDelta(" plus two."),
        TextDelta("4"),
        Finish("length"),
    ]


async def test_request_body_maps_the_conversation(server: LlmServer) -> None:
    provider = make_provider(server, max_tokens=256, temperature=0.2)
    server.script(stream(openai_text_reply(["Done."])))
    schema = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    request = ProviderRequest(
        system="You help with files.",
        messages=[
            ChatMessage("user", "Read a.txt and b.txt."),
            ChatMessage(
                "assistant",
                "",
                tool_calls=(
                    ToolCallRequest("call_a", "read_file", '{"path": "a.txt"}'),
                    ToolCallRequest("call_b", "read_file", '{"path": "b.txt"}'),
                ),
            ),
            ChatMessage("tool", "alpha", tool_call_id="call_a"),
            ChatMessage("tool", "No such file: b.txt", tool_call_id="call_b", is_error=True),
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
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body == {
        "model": "gpt-test",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 256,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You help with files."},
            {"role": "user", "content": "Read a.txt and b.txt."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "b.txt"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "alpha"},
            {"role": "tool", "tool_call_id": "call_b", "content": "No such file: b.txt"},
            {"role": "assistant", "content": "a.txt says alpha; b.txt is missing."},
            {"role": "user", "content": "Thanks."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "read_file",
                    "description": "Reads a file.",
                    "parameters": schema,
                },
            }
        ],
    }


async def test_empty_system_prompt_and_tools_are_left_out(
    server: LlmServer, provider: OpenAIProvider
) -> None:
    server.script(stream(openai_text_reply(["Hi."])))

    await collect(provider, ProviderRequest("", [ChatMessage("user", "Hi.")]))

    body = server.requests[0].body
    assert body["messages"] == [{"role": "user", "content": "Hi."}]
    assert "tools" not in body
    assert "max_tokens" not in body
    assert "temperature" not in body


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
    provider = OpenAIProvider(
        {
            **names,
            "api_key": API_KEY,
            "base_url": f"{server.origin}/v1",
            "max_retries": 0,
            "priority": 1,
        }
    )
    server.script(stream(openai_text_reply(["Hi."], model="some-model")))
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()

    assert server.requests[0].body["model"] == "some-model"
    assert "priority" not in server.requests[0].body
    assert events[-1] == Finish("stop")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (
            {"default_model": "gpt-a", "model": "gpt-b"},
            ("default_model", "model", "gpt-a", "gpt-b"),
        ),
        (
            {"default_model": "gpt-a", "timeout": 5, "timeout_seconds": 6},
            ("timeout_seconds", "timeout"),
        ),
    ],
)
def test_a_key_and_its_alias_that_differ_are_refused_naming_both(
    config: dict[str, Any], named: tuple[str, ...]
) -> None:
    with pytest.raises(ProviderError) as caught:
        OpenAIProvider(config)

    assert caught.value.code == "PROVIDER_CONFIG"
    for fragment in named:
        assert fragment in caught.value.message


async def test_timeout_under_amplifiers_name_bounds_a_silent_server(server: LlmServer) -> None:
    provider = OpenAIProvider(
        {
            "default_model": "gpt-test",
            "base_url": f"{server.origin}/v1",
            "max_retries": 0,
            "timeout": 0.3,
        }
    )
    server.script(stream(slow_reply()[1:]))
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
        (429, "requests", "PROVIDER_RATE_LIMITED", True),
        (500, "server_error", "PROVIDER_UNAVAILABLE", True),
        (503, "server_error", "PROVIDER_UNAVAILABLE", True),
        (401, "invalid_request_error", "PROVIDER_AUTH", False),
        (403, "invalid_request_error", "PROVIDER_AUTH", False),
        (400, "invalid_request_error", "PROVIDER_BAD_REQUEST", False),
        (404, "invalid_request_error", "PROVIDER_BAD_REQUEST", False),
    ],
)
async def test_http_errors_become_provider_errors(
    server: LlmServer,
    provider: OpenAIProvider,
    status: int,
    error_type: str,
    code: str,
    retryable: bool,
) -> None:
    # The API quotes the key back in some errors; it must not reach our message.
    server.script(error(status, openai_error_body(f"Trouble with key {API_KEY}.", error_type)))

    raised = await failure(provider)

    assert raised.code == code
    assert raised.retryable is retryable
    assert f"HTTP {status}" in raised.message
    assert "Trouble with key [redacted]." in raised.message
    assert API_KEY not in raised.message
    assert API_KEY not in str(raised)
    assert len(server.requests) == 1


async def test_max_retries_is_passed_to_the_sdk(server: LlmServer) -> None:
    provider = make_provider(server, max_retries=1)
    server.script(
        error(429, openai_error_body("Slow down.", "requests")),
        stream(openai_text_reply(["Hi."])),
    )
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()

    assert events[-1] == Finish("stop")
    assert len(server.requests) == 2


async def test_error_inside_the_stream(server: LlmServer, provider: OpenAIProvider) -> None:
    server.script(
        stream(
            [
                openai_chunk({"content": "Part"}),
                SseEvent(
                    '{"error": {"message": "The server had an error while processing your'
                    ' request.", "type": "server_error", "param": null, "code": null}}'
                ),
            ]
        )
    )
    seen, raised = await until_failure(provider)

    assert seen == [TextDelta("Part")]
    assert raised.code == "PROVIDER_ERROR"
    assert "server had an error" in raised.message


async def test_connection_dropped_mid_stream(server: LlmServer, provider: OpenAIProvider) -> None:
    server.script(stream([openai_chunk({"content": "Part"})], abort=True))

    raised = await failure(provider)

    assert raised.code == "PROVIDER_UNAVAILABLE"
    assert raised.retryable


async def test_stream_ending_without_a_finish_reason(
    server: LlmServer, provider: OpenAIProvider
) -> None:
    server.script(stream([openai_chunk({"content": "Part"}), openai_done()]))

    raised = await failure(provider)

    assert raised.code == "PROVIDER_ERROR"


async def test_unreachable_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = OpenAIProvider(
        {
            "model": "gpt-test",
            "api_key": API_KEY,
            "base_url": f"http://127.0.0.1:{port}/v1",
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
        openai_chunk({"role": "assistant", "content": "First"}),
        openai_chunk({"content": " never"}, delay=3600),
        openai_chunk({}, finish_reason="stop"),
        openai_done(),
    ]


async def test_closing_the_stream_closes_the_connection(
    server: LlmServer, provider: OpenAIProvider
) -> None:
    server.script(stream(slow_reply()))
    events = provider.stream(HELLO)

    assert await anext(events) == TextDelta("First")
    # The rest of the reply is an hour away: closing must not wait for it.
    await asyncio.wait_for(events.aclose(), 30)

    assert await server.wait_for_disconnect(1.0)
    assert server.completed_streams == 0


async def test_cancelling_the_consumer_closes_the_connection(
    server: LlmServer, provider: OpenAIProvider
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
    [{}, {"model": ""}, {"model": 4}, {"model": "gpt-test", "max_retries": -1}],
)
def test_invalid_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as caught:
        OpenAIProvider(config)

    assert caught.value.code == "PROVIDER_CONFIG"


async def test_works_without_an_api_key(server: LlmServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = OpenAIProvider({"model": "local-model", "base_url": f"{server.origin}/v1"})
    server.script(stream(openai_text_reply(["Hi."])))
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()

    assert events[-1] == Finish("stop")
    assert server.requests[0].headers["authorization"].startswith("Bearer ")


async def test_the_server_environment_is_never_a_credential(
    server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tenant's bundle that names no key must not be handed the operator's.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-environment")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/never")
    provider = OpenAIProvider({"model": "gpt-test", "base_url": f"{server.origin}/v1"})
    server.script(stream(openai_text_reply(["Hi."])))
    try:
        await collect(provider)
    finally:
        await provider.aclose()
    assert server.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"
    unset = OpenAIProvider({"model": "gpt-test"})
    try:
        assert str(unset._client.base_url).startswith("https://api.openai.com/")
    finally:
        await unset.aclose()
