"""Re-wrapping a method handler's behaviour: what every Tandem server interceptor does."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

# The typing stubs make these generic; at run time they are plain classes.
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor

Behavior = Callable[..., Any]


def rewrap(
    handler: Handler,
    wrap_unary: Callable[[Behavior], Behavior],
    wrap_stream: Callable[[Behavior], Behavior],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """handler with its behaviour wrapped.

    Unary responses go through wrap_unary; server streams through wrap_stream when they are
    async generators, and through wrap_unary when they write with `context.write()`.
    Client-streaming methods are not part of the contract and pass through untouched.
    """
    deserializer = request_deserializer or handler.request_deserializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            wrap_unary(handler.unary_unary),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream = handler.unary_stream
        wrapped = wrap_stream(stream) if inspect.isasyncgenfunction(stream) else wrap_unary(stream)
        return grpc.unary_stream_rpc_method_handler(
            wrapped,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class WrappingInterceptor(Interceptor):
    """A server interceptor that wraps the behaviour of the methods it picks.

    Subclasses say which methods (`pick`) and how (`wrap_unary`, `wrap_stream`); the shell
    that finds the handler and rebuilds it is this one.
    """

    def pick(self, full_method: str) -> str | None:
        """The method name the wrappers get, or None to leave the handler as it is."""
        return full_method

    def wrap_unary(self, behavior: Behavior, method: str) -> Behavior:
        """The wrapper for unary responses (and streams written with `context.write()`)."""
        raise NotImplementedError

    def wrap_stream(self, behavior: Behavior, method: str) -> Behavior:
        """The wrapper for server streams that are async generators."""
        raise NotImplementedError

    def request_deserializer(self, handler: Handler) -> Callable[[bytes], Any] | None:
        """A replacement for the handler's request deserializer; None keeps it."""
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler: Handler | None = await continuation(handler_call_details)
        # No handler: an unknown method, which grpc answers UNIMPLEMENTED itself.
        if handler is None:
            return handler  # type: ignore[return-value]
        return self._memo.get(handler, lambda: self._rewrap(handler, handler_call_details.method))

    @functools.cached_property
    def _memo(self) -> HandlerMemo:
        # Built on first use: subclasses need not call an __init__ here.
        return HandlerMemo()

    def _rewrap(self, handler: Handler, full_method: str) -> Handler:
        method = self.pick(full_method)
        if method is None:
            return handler
        return rewrap(
            handler,
            lambda behavior: self.wrap_unary(behavior, method),
            lambda behavior: self.wrap_stream(behavior, method),
            self.request_deserializer(handler),
        )


class HandlerMemo:
    """Each handler's rewrapped form, built once.

    A server hands out the same handler object for a method on every call, and a wrapper
    depends only on the method, so rebuilding it per call would only cost time. Keyed by
    identity; the handler is held so that its id stays its own.
    """

    def __init__(self) -> None:
        self._built: dict[int, tuple[Handler, Handler]] = {}

    def get(self, handler: Handler, build: Callable[[], Handler]) -> Handler:
        """The rewrapped handler, built on first use."""
        found = self._built.get(id(handler))
        if found is not None and found[0] is handler:
            return found[1]
        built = build()
        self._built[id(handler)] = (handler, built)
        return built
