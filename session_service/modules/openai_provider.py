"""Chat completions through the official openai SDK.

Works with the OpenAI API and with servers that speak its chat-completions dialect (set
base_url). Every call streams; tool calls are assembled from their fragments before they are
reported, and SDK failures become ProviderError with a code the turn engine understands.

Config keys (Amplifier's names; see CONFIG_KEYS):
- `default_model` (required), or its alias `model`: the model every request names.
- `base_url`: the API endpoint (default OpenAI's); it must be a host the operator allows.
- `api_key`: the credential, normally a `${VAR}` reference; local servers need none.
- `max_tokens`, `temperature`: sent only when set.
- `timeout` (Amplifier's name), or `timeout_seconds`: seconds per request (default 60).
- `max_retries`: SDK retries of a failed request (default 2).
- `priority`: accepted and ignored here; preparation picks the default provider by it.

Nothing is read from the server's environment (OPENAI_API_KEY, OPENAI_BASE_URL).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDelta

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

DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_RETRIES = 2
# Local OpenAI-compatible servers ignore the key, but the SDK will not start without one.
PLACEHOLDER_API_KEY = "tandem-no-api-key"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


class OpenAIProvider:
    """Streams chat completions from the OpenAI API or a server compatible with it."""

    name = "provider-openai"
    CONFIG_KEYS: frozenset[str] = PROVIDER_KEYS | {"timeout", "timeout_seconds", "max_retries"}

    def __init__(self, config: Mapping[str, Any]) -> None:
        read = ProviderConfig(self.name, config)
        self.model = read.model()
        # Only the bundle's own setting: the server's environment is the operator's, and a
        # tenant reaches a variable of it only through an allowed `${VAR}` reference.
        api_key = read.optional_str("api_key") or PLACEHOLDER_API_KEY
        self.max_tokens = read.optional_positive_int("max_tokens")
        self.temperature = read.optional_number("temperature")
        timeout = read.positive_number(
            read.aliased("timeout_seconds", "timeout"), DEFAULT_TIMEOUT_SECONDS
        )
        max_retries = read.non_negative_int("max_retries", DEFAULT_MAX_RETRIES)
        self._secret = api_key
        try:
            self._client = openai.AsyncOpenAI(
                api_key=api_key,
                # Explicit, so the SDK never picks OPENAI_BASE_URL up from the server.
                base_url=read.optional_str("base_url") or DEFAULT_BASE_URL,
                timeout=timeout,
                max_retries=max_retries,
            )
        except openai.OpenAIError as exc:
            raise ProviderError(
                "PROVIDER_CONFIG", redact(f"Invalid OpenAI provider config: {exc}", api_key)
            ) from None
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
        """Streams one chat completion as text, reasoning, tool calls, usage and finish."""
        calls: dict[int, _PartialCall] = {}
        finish_reason: str | None = None
        usage: tuple[int, int] | None = None
        model = self.model
        streaming = False
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=_messages(request),
                tools=[_tool(spec) for spec in request.tools] if request.tools else openai.omit,
                max_tokens=self.max_tokens if self.max_tokens is not None else openai.omit,
                temperature=self.temperature if self.temperature is not None else openai.omit,
                stream=True,
                stream_options={"include_usage": True},
            )
            # The context manager closes the HTTP response however the iteration ends,
            # including when our consumer stops early or is cancelled.
            async with response:
                streaming = True
                async for chunk in response:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        # Read defensively: compatible servers do not all fill both counts.
                        usage = (
                            chunk.usage.prompt_tokens or 0,
                            chunk.usage.completion_tokens or 0,
                        )
                    for event in _chunk_events(chunk, calls):
                        yield event
                    reason = _finish_reason(chunk)
                    if reason is not None:
                        finish_reason = reason
                        for call in _complete_calls(calls):
                            yield ToolCallDelta(call)
                        calls.clear()
        except openai.OpenAIError as exc:
            raise _provider_error(exc, self._secret, self._where, streaming) from None
        except json.JSONDecodeError:
            raise ProviderError(
                "PROVIDER_ERROR", f"The model API at {self._where} sent a malformed stream event."
            ) from None
        if finish_reason is None:
            raise ProviderError(
                "PROVIDER_ERROR",
                f"The stream from the model API at {self._where} ended before the reply finished.",
            )
        if usage is not None:
            yield UsageReport(usage[0], usage[1], model)
        yield Finish(finish_reason.lower())


@dataclass
class _PartialCall:
    """A tool call whose fragments are still arriving."""

    index: int
    tool_call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def _chunk_events(
    chunk: ChatCompletionChunk, calls: dict[int, _PartialCall]
) -> Iterator[ProviderEvent]:
    """Text and reasoning deltas of one chunk; tool call fragments go into calls."""
    for choice in chunk.choices:
        # Only one completion is requested; a server that sends more is not followed.
        if choice.index != 0:
            continue
        delta = choice.delta
        reasoning = _reasoning(delta)
        if reasoning:
            yield ThinkingDelta(reasoning)
        if delta.content:
            yield TextDelta(delta.content)
        for fragment in delta.tool_calls or ():
            partial = calls.setdefault(fragment.index, _PartialCall(fragment.index))
            if fragment.id:
                partial.tool_call_id = fragment.id
            if fragment.function is not None:
                if fragment.function.name:
                    partial.name = fragment.function.name
                if fragment.function.arguments:
                    partial.arguments.append(fragment.function.arguments)


def _finish_reason(chunk: ChatCompletionChunk) -> str | None:
    for choice in chunk.choices:
        if choice.index == 0 and choice.finish_reason:
            return str(choice.finish_reason)
    return None


def _reasoning(delta: ChoiceDelta) -> str:
    """Reasoning text some compatible servers add to the delta under a name of their own."""
    for attribute in ("reasoning_content", "reasoning"):
        value = getattr(delta, attribute, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _complete_calls(calls: Mapping[int, _PartialCall]) -> Iterator[ToolCallRequest]:
    for index in sorted(calls):
        partial = calls[index]
        yield ToolCallRequest(
            # Some compatible servers omit ids; the result must still name its call.
            tool_call_id=partial.tool_call_id or f"call_{index}",
            name=partial.name,
            arguments_json="".join(partial.arguments) or "{}",
        )


def _messages(request: ProviderRequest) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend(_message(message) for message in request.messages)
    return messages


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "tool":
        # The API has no error flag for tool results; the content says what failed.
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant":
        assistant: ChatCompletionAssistantMessageParam = {"role": "assistant"}
        if message.tool_calls:
            assistant["content"] = message.content or None
            assistant["tool_calls"] = [_tool_call(call) for call in message.tool_calls]
        else:
            assistant["content"] = message.content
        return assistant
    return {"role": "user", "content": message.content}


def _tool_call(call: ToolCallRequest) -> ChatCompletionMessageFunctionToolCallParam:
    return {
        "id": call.tool_call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
    }


def _tool(spec: ToolSpec) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": dict(spec.parameters or _EMPTY_SCHEMA),
        },
    }


def _provider_error(
    exc: openai.OpenAIError, secret: str, where: str, streaming: bool
) -> ProviderError:
    """The ProviderError for an SDK failure; its message never contains the api_key."""
    code = "PROVIDER_ERROR"
    retryable = False
    if isinstance(exc, openai.APITimeoutError):
        code, retryable = "PROVIDER_UNAVAILABLE", True
        text = f"The model API at {where} did not answer in time."
    elif isinstance(exc, openai.APIConnectionError):
        code, retryable = "PROVIDER_UNAVAILABLE", True
        text = (
            f"The connection to the model API at {where} broke during the stream."
            if streaming
            else f"Could not reach the model API at {where}."
        )
    elif isinstance(exc, openai.APIStatusError):
        code, retryable = status_error(exc.status_code)
        detail = _api_message(exc.body) or "no details"
        text = f"The model API at {where} answered HTTP {exc.status_code}: {detail}"
    elif isinstance(exc, openai.APIError):
        detail = _api_message(exc.body) or exc.message
        text = f"The model API at {where} reported an error during the stream: {detail}"
    else:
        text = f"The call to the model API at {where} failed: {exc}"
    return ProviderError(code, redact(text, secret), retryable=retryable)


def _api_message(body: object) -> str:
    """The `message` of an error body, whether or not it is wrapped in `error`."""
    if isinstance(body, Mapping):
        nested = body.get("error")
        if isinstance(nested, Mapping):
            body = nested
        message = body.get("message") if isinstance(body, Mapping) else None
        if isinstance(message, str):
            return message
    if isinstance(body, str):
        return body[:500]
    return ""
