"""The gate every request passes after authentication and before its handler.

grpc would decode a request before any interceptor ran, so before the caller is known. The
server instead hands each request through as raw bytes; this innermost interceptor, which
runs after authentication, then checks the bytes against the method's own size cap, decodes
them, refuses what cannot be stored or is not UTF-8 with the field named, and only then calls
the handler. An anonymous caller therefore never costs more than its bytes.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError

from shared.errors import FieldViolation, InvalidArgument
from shared.listing import PageTokenKeys, use_page_token_keys
from shared.rpc.fields import check_request
from shared.rpc.handlers import Handler, HandlerMemo, Interceptor, rewrap
from shared.rpc.wire import MAX_DEPTH, Problem, find_problem, largest_field

_Context = grpc.aio.ServicerContext[Any, Any]
Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True)
class RequestLimits:
    """The largest request, in bytes, each method accepts.

    Checked after authentication and before decoding. The server's transport cap (what it
    buffers before knowing the caller) is the largest of these for its services.
    """

    default_bytes: int
    # Full method name (`/tandem.config.v1.ConfigService/CreateConfig`) -> bytes.
    methods: Mapping[str, int] = field(default_factory=dict)

    def of(self, method: str) -> int:
        """The cap of method."""
        return self.methods.get(method, self.default_bytes)

    def largest(self, services: Iterable[str]) -> int:
        """The largest cap of any method of the named services."""
        prefixes = tuple(f"/{name}/" for name in services)
        caps = [size for method, size in self.methods.items() if method.startswith(prefixes)]
        return max([self.default_bytes, *caps])


def _descriptor(deserializer: Deserializer) -> Descriptor | None:
    # Generated handlers deserialize with `Message.FromString`, bound to the message class.
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return descriptor if isinstance(descriptor, Descriptor) else None


class _Decoder:
    """Turns one method's raw request bytes into its message, or a located refusal."""

    def __init__(self, method: str, deserializer: Deserializer, limit: int) -> None:
        self._method = method.rsplit("/", 1)[-1]
        self._deserializer = deserializer
        self._descriptor = _descriptor(deserializer)
        self._limit = limit

    def __call__(self, data: bytes) -> Any:
        if len(data) > self._limit:
            raise self._too_large(data)
        try:
            request = self._deserializer(data)
        except DecodeError as exc:
            raise self._undecodable(data) from exc
        check_request(request)
        return request

    def _too_large(self, data: bytes) -> InvalidArgument:
        culprit = largest_field(self._descriptor, data) if self._descriptor else ""
        return InvalidArgument(
            f"The request is {len(data)} bytes; {self._method} accepts at most {self._limit}.",
            reason="REQUEST_TOO_LARGE",
            metadata={"limit_bytes": str(self._limit), "size_bytes": str(len(data))},
            violations=[FieldViolation(culprit, f"the request is over {self._limit} bytes")],
        )

    def _undecodable(self, data: bytes) -> InvalidArgument:
        problem = find_problem(self._descriptor, data) if self._descriptor else None
        if problem is None:
            return InvalidArgument(
                "The request could not be decoded.",
                reason="MALFORMED_REQUEST",
                violations=[FieldViolation("", "not a valid protobuf message of this RPC")],
            )
        if problem.problem is Problem.TOO_DEEP:
            return InvalidArgument(
                f"{problem.field} is nested too deeply.",
                reason="NESTING_TOO_DEEP",
                violations=[
                    FieldViolation(
                        problem.field, f"messages may nest at most {MAX_DEPTH} levels deep"
                    )
                ],
            )
        return InvalidArgument(
            f"{problem.field} is not valid UTF-8 (byte {problem.byte_offset}).",
            reason="INVALID_UTF8",
            violations=[
                FieldViolation(
                    problem.field,
                    f"invalid UTF-8 at byte {problem.byte_offset}",
                    problem.line,
                    problem.column,
                )
            ],
        )


def _raw(data: bytes) -> bytes:
    return data


class RequestGate(Interceptor):
    """The innermost interceptor: size cap, decoding and boundary checks, then the handler.

    The server's other interceptors see the request as raw bytes; every handler sees it
    decoded and checked. Each call also signs and verifies its page tokens with the
    server's keys.
    """

    def __init__(self, limits: RequestLimits, page_token_keys: PageTokenKeys | None) -> None:
        self._limits = limits
        self._page_token_keys = page_token_keys
        self._memo = HandlerMemo()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler: Handler | None = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler  # type: ignore[return-value]
        return self._memo.get(handler, lambda: self._gated(handler, handler_call_details.method))

    def _gated(self, handler: Handler, method: str) -> Handler:
        deserializer = handler.request_deserializer
        assert deserializer is not None
        decode = _Decoder(method, deserializer, self._limits.of(method))
        keys = self._page_token_keys

        def wrap_unary(behavior: Any) -> Any:
            async def decoded(data: bytes, context: _Context) -> Any:
                request = decode(data)
                if keys is not None:
                    use_page_token_keys(keys)
                result = behavior(request, context)
                return (await result) if inspect.isawaitable(result) else result

            return decoded

        def wrap_stream(behavior: Any) -> Any:
            async def decoded(data: bytes, context: _Context) -> AsyncIterator[Any]:
                request = decode(data)
                if keys is not None:
                    use_page_token_keys(keys)
                async for response in behavior(request, context):
                    yield response

            return decoded

        return rewrap(handler, wrap_unary, wrap_stream, request_deserializer=_raw)
