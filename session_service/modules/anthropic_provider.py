"""Messages through the official anthropic SDK.

Every call streams; tool_use blocks are assembled from their input_json_delta fragments
before they are reported, and SDK failures become ProviderError with a code the turn engine
understands.

Config keys (Amplifier's names; see CONFIG_KEYS):
- `default_model` (required), or its alias `model`: the model every request names.
- `api_key` (required): the credential, normally a `${VAR}` reference or a tenant secret.
- `base_url`: the API endpoint (default Anthropic's); it must be a host the operator allows.
- `max_tokens`: the reply's token limit (default 1024; the API requires one).
- `temperature`: sent only when set.
- `timeout` (Amplifier's name), or `timeout_seconds`: seconds per request (default 60).
- `max_retries`: SDK retries of a failed request (default 2).
- `priority`: accepted and ignored here; preparation picks the default provider by it.

Nothing is read from the server's environment (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
from anthropic import types as api

from session_service.modules.provider_errors import redact, status_error
from session_service.modules.settings import PROVIDER_KEYS, ProviderConfig
from session_service.prepare.egress import EgressPolicy
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

DEFAULT_MAX_TOKENS = 1024
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_BASE_URL = "https://api.anthropic.com"
_EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


class AnthropicProvider:
    """Streams messages from the Anthropic API."""

    name = "provider-anthropic"
    CONFIG_KEYS: frozenset[str] = PROVIDER_KEYS | {"timeout", "timeout_seconds", "max_retries"}

    def __init__(self, config: Mapping[str, Any]) -> None:
        read = ProviderConfig(self.name, config)
        self.model = read.model()
        # Only the bundle's own setting: the SDK's own search (ANTHROPIC_API_KEY, profiles in
        # the server's home) would hand a tenant the operator's credentials.
        api_key = read.optional_str("api_key")
        self.max_tokens = read.positive_int("max_tokens", DEFAULT_MAX_TOKENS)
        self.temperature = read.optional_number("temperature")
        timeout = read.positive_number(
            read.aliased("timeout_seconds", "timeout"), DEFAULT_TIMEOUT_SECONDS
        )
        max_retries = read.non_negative_int("max_retries", DEFAULT_MAX_RETRIES)
        if api_key is None:
            raise ProviderError(
                "PROVIDER_AUTH",
                f"{self.name}: no api_key in its config; reference a credential the operator "
                "allows, such as ${ANTHROPIC_API_KEY}, or a tenant secret.",
            )
        try:
            self._client = anthropic.AsyncAnthropic(
                api_key=api_key,
                # Explicit, so the SDK never picks ANTHROPIC_BASE_URL up from the server.
                base_url=read.optional_str("base_url") or DEFAULT_BASE_URL,
                timeout=timeout,
                max_retries=max_retries,
            )
        except anthropic.CredentialsError as exc:
            raise ProviderError(
                "PROVIDER_AUTH", redact(f"No usable Anthropic credentials: {exc}", api_key)
            ) from None
        except (anthropic.AnthropicError, ValueError) as exc:
            raise ProviderError(
                "PROVIDER_CONFIG",
                redact(f"Invalid Anthropic provider config: {exc}", api_key),
            ) from None
        # Whatever the SDK settled on, so it can be kept out of error messages.
        self._secret = self._client.api_key or self._client.auth_token or ""
        url = self._client.base_url
        # Scheme, host and port only: a base_url may carry credentials in its userinfo.
        self._where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")

    @staticmethod
    def check_config(config: Mapping[str, Any], egress: EgressPolicy) -> list[tuple[str, str]]:
        """The endpoint must be one the operator allows (checked when the bundle is prepared)."""
        return egress.base_url_problems(config, DEFAULT_BASE_URL)

    async def aclose(self) -> None:
        """Closes the SDK client and its pooled connections."""
        await self._client.close()

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Streams one message as text, thinking, tool calls, usage and finish."""
        reply = _Reply(self.model)
        streaming = False
        try:
            response = await self._client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                messages=_messages(request.messages),
                system=request.system or anthropic.omit,
                tools=[_tool(spec) for spec in request.tools] if request.tools else anthropic.omit,
                stream=True,
                # This SDK has no sampling parameters of its own, so temperature (only when
                # configured) goes into the body as is.
                extra_body=None if self.temperature is None else {"temperature": self.temperature},
            )
            # The context manager closes the HTTP response however the iteration ends,
            # including when our consumer stops early or is cancelled.
            async with response:
                streaming = True
                async for event in response:
                    for provider_event in reply.feed(event):
                        yield provider_event
        except anthropic.AnthropicError as exc:
            raise _provider_error(exc, self._secret, self._where, streaming) from None
        except httpx2.HTTPError:
            # The SDK lets transport errors that happen while reading the stream through.
            raise ProviderError(
                "PROVIDER_UNAVAILABLE",
                f"The connection to the model API at {self._where} broke during the stream.",
                retryable=True,
            ) from None
        except json.JSONDecodeError:
            raise ProviderError(
                "PROVIDER_ERROR", f"The model API at {self._where} sent a malformed stream event."
            ) from None
        except TypeError as exc:
            if streaming:
                raise
            # The SDK refuses to build a request when it found no credentials at all.
            if "authentication" in str(exc):
                raise ProviderError(
                    "PROVIDER_AUTH",
                    f"No credentials for the model API at {self._where}: set api_key in the "
                    "provider config or ANTHROPIC_API_KEY.",
                ) from None
            raise ProviderError(
                "PROVIDER_CONFIG",
                redact(
                    f"Could not build the request to the model API at {self._where}: {exc}",
                    self._secret,
                ),
            ) from None
        if not reply.stopped:
            raise ProviderError(
                "PROVIDER_ERROR",
                f"The stream from the model API at {self._where} ended before the reply finished.",
            )
        yield UsageReport(reply.usage.input_total(), reply.usage.output_tokens, reply.model)
        yield Finish(reply.stop_reason.lower())


class _Reply:
    """Turns the API's stream events into provider events, keeping what spans several."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage = _Usage()
        self.stop_reason = ""
        self.stopped = False
        self._tool_uses: dict[int, _ToolUse] = {}

    def feed(self, event: api.RawMessageStreamEvent) -> Iterator[ProviderEvent]:
        """The provider events one stream event makes, if any."""
        # Dispatch on the wire type: the SDK builds events of types it does not know as the
        # first member of its union, so isinstance alone would lie.
        if event.type == "message_start" and isinstance(event, api.RawMessageStartEvent):
            self.model = event.message.model or self.model
            self.usage.start(event.message.usage)
        elif event.type == "content_block_start" and isinstance(
            event, api.RawContentBlockStartEvent
        ):
            block = event.content_block
            if block.type == "tool_use" and isinstance(block, api.ToolUseBlock):
                self._tool_uses[event.index] = _ToolUse(block.id, block.name, block.input)
            elif block.type == "text" and isinstance(block, api.TextBlock) and block.text:
                yield TextDelta(block.text)
            elif (
                block.type == "thinking" and isinstance(block, api.ThinkingBlock) and block.thinking
            ):
                yield ThinkingDelta(block.thinking)
        elif event.type == "content_block_delta" and isinstance(
            event, api.RawContentBlockDeltaEvent
        ):
            delta = event.delta
            if delta.type == "text_delta" and isinstance(delta, api.TextDelta) and delta.text:
                yield TextDelta(delta.text)
            elif (
                delta.type == "thinking_delta"
                and isinstance(delta, api.ThinkingDelta)
                and delta.thinking
            ):
                yield ThinkingDelta(delta.thinking)
            elif delta.type == "input_json_delta" and isinstance(delta, api.InputJSONDelta):
                tool_use = self._tool_uses.get(event.index)
                if tool_use is not None:
                    tool_use.fragments.append(delta.partial_json)
        elif event.type == "content_block_stop":
            finished = self._tool_uses.pop(event.index, None)
            if finished is not None:
                yield ToolCallDelta(finished.request())
        elif event.type == "message_delta" and isinstance(event, api.RawMessageDeltaEvent):
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.usage.update(event.usage)
        elif event.type == "message_stop":
            self.stopped = True


@dataclass
class _ToolUse:
    """A tool_use block whose input is still arriving."""

    tool_use_id: str
    name: str
    initial_input: Mapping[str, object]
    fragments: list[str] = field(default_factory=list)

    def request(self) -> ToolCallRequest:
        arguments = "".join(self.fragments)
        if not arguments and self.initial_input:
            arguments = json.dumps(self.initial_input)
        return ToolCallRequest(self.tool_use_id, self.name, arguments or "{}")


@dataclass
class _Usage:
    """Token counts; message_delta carries cumulative values that replace earlier ones."""

    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0

    def start(self, usage: api.Usage) -> None:
        self.input_tokens = usage.input_tokens or 0
        self.cache_creation_input_tokens = usage.cache_creation_input_tokens or 0
        self.cache_read_input_tokens = usage.cache_read_input_tokens or 0
        self.output_tokens = usage.output_tokens or 0

    def update(self, usage: api.MessageDeltaUsage) -> None:
        if usage.input_tokens is not None:
            self.input_tokens = usage.input_tokens
        if usage.cache_creation_input_tokens is not None:
            self.cache_creation_input_tokens = usage.cache_creation_input_tokens
        if usage.cache_read_input_tokens is not None:
            self.cache_read_input_tokens = usage.cache_read_input_tokens
        if usage.output_tokens is not None:
            self.output_tokens = usage.output_tokens

    def input_total(self) -> int:
        """All input tokens: the API counts cache writes and reads apart from input_tokens."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def _messages(messages: Sequence[ChatMessage]) -> list[api.MessageParam]:
    result: list[api.MessageParam] = []
    # The user message that holds the tool results of the current run of tool messages.
    results: list[api.ToolResultBlockParam] | None = None
    for message in messages:
        if message.role == "tool":
            block = _tool_result(message)
            if results is None:
                results = [block]
                result.append({"role": "user", "content": results})
            else:
                results.append(block)
            continue
        results = None
        if message.role == "assistant":
            assistant = _assistant(message)
            if assistant is not None:
                result.append(assistant)
        else:
            result.append({"role": "user", "content": message.content})
    return result


def _assistant(message: ChatMessage) -> api.MessageParam | None:
    if not message.tool_calls:
        # The API rejects empty text content; an empty reply adds nothing to the context.
        if not message.content:
            return None
        return {"role": "assistant", "content": message.content}
    blocks: list[api.TextBlockParam | api.ToolUseBlockParam] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {
            "type": "tool_use",
            "id": call.tool_call_id,
            "name": call.name,
            "input": _tool_input(call.arguments_json),
        }
        for call in message.tool_calls
    )
    return {"role": "assistant", "content": blocks}


def _tool_input(arguments_json: str) -> dict[str, object]:
    # The API only takes an object here; the model already saw its malformed arguments
    # fail as a tool result, so an empty object keeps the conversation valid.
    try:
        value = json.loads(arguments_json or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_result(message: ChatMessage) -> api.ToolResultBlockParam:
    block: api.ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": message.tool_call_id,
        "is_error": message.is_error,
    }
    if message.content:
        block["content"] = message.content
    return block


def _tool(spec: ToolSpec) -> api.ToolParam:
    return {
        "name": spec.name,
        "description": spec.description,
        "input_schema": dict(spec.parameters or _EMPTY_SCHEMA),
    }


def _provider_error(
    exc: anthropic.AnthropicError, secret: str, where: str, streaming: bool
) -> ProviderError:
    """The ProviderError for an SDK failure; its message never contains the api_key."""
    code = "PROVIDER_ERROR"
    retryable = False
    if isinstance(exc, anthropic.APITimeoutError):
        code, retryable = "PROVIDER_UNAVAILABLE", True
        text = f"The model API at {where} did not answer in time."
    elif isinstance(exc, anthropic.APIConnectionError):
        code, retryable = "PROVIDER_UNAVAILABLE", True
        text = (
            f"The connection to the model API at {where} broke during the stream."
            if streaming
            else f"Could not reach the model API at {where}."
        )
    elif isinstance(exc, anthropic.APIStatusError) and exc.status_code < 400:
        # An `error` event inside a stream that had started with 200 OK.
        text = f"The model API at {where} reported an error during the stream: {_detail(exc)}"
    elif isinstance(exc, anthropic.APIStatusError):
        code, retryable = status_error(exc.status_code)
        text = f"The model API at {where} answered HTTP {exc.status_code}: {_detail(exc)}"
    elif isinstance(exc, anthropic.CredentialsError):
        code = "PROVIDER_AUTH"
        text = f"No credentials for the model API at {where}: {exc}"
    else:
        text = f"The call to the model API at {where} failed: {exc}"
    return ProviderError(code, redact(text, secret), retryable=retryable)


def _detail(exc: anthropic.APIStatusError) -> str:
    error = exc.body.get("error") if isinstance(exc.body, Mapping) else None
    if isinstance(error, Mapping):
        message = error.get("message")
        kind = error.get("type")
        if isinstance(message, str) and isinstance(kind, str):
            return f"{message} ({kind})"
        if isinstance(message, str):
            return message
    if isinstance(exc.body, str) and exc.body:
        return exc.body[:500]
    return "no details"
