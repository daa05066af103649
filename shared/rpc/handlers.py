"""Re-wrapping a method handler's behaviour: what every Tandem server interceptor does."""

from __future__ import annotations

import inspect
from collections.abc import Callable
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
