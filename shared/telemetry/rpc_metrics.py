"""`rpc.server.call.duration`: the RPC semantic conventions' server histogram, in seconds.

The gRPC instrumentation traces but does not measure asyncio servers, so Tandem measures
them itself with this interceptor.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
from opentelemetry.metrics import Histogram, Meter

from shared.rpc.handlers import WrappingInterceptor

DURATION = "rpc.server.call.duration"
# The conventions' advised boundaries for RPC durations, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_UNMEASURED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


_Context = grpc.aio.ServicerContext[Any, Any]


def status_name(context: _Context, error: BaseException | None) -> str:
    """The status the call ended with, as its canonical name (`OK`, `NOT_FOUND`, ...)."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    code: Any = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if code is None or code == 0:
        return (
            "UNKNOWN" if error is not None and not isinstance(error, grpc.aio.AbortError) else "OK"
        )
    # Some grpc versions hand back the numeric code.
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return "UNKNOWN"


class RpcMetricsInterceptor(WrappingInterceptor):
    """Records every call's duration with its method and status code."""

    def __init__(self, meter: Meter) -> None:
        self._duration: Histogram = meter.create_histogram(
            DURATION,
            unit="s",
            description="Duration of RPCs handled by the server.",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )

    def _record(
        self, method: str, started: float, context: _Context, error: BaseException | None
    ) -> None:
        self._duration.record(
            time.perf_counter() - started,
            {
                "rpc.system.name": "grpc",
                "rpc.method": method,
                "rpc.status_code": status_name(context, error),
            },
        )

    def pick(self, full_method: str) -> str | None:
        return None if full_method.startswith(_UNMEASURED) else full_method.lstrip("/")

    def wrap_unary(self, behavior: Any, method: str) -> Any:
        async def measured(request: Any, context: _Context) -> Any:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                result = behavior(request, context)
                return (await result) if inspect.isawaitable(result) else result
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._record(method, started, context, error)

        return measured

    def wrap_stream(self, behavior: Any, method: str) -> Any:
        async def measured(request: Any, context: _Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                async for response in cast(AsyncIterator[Any], behavior(request, context)):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._record(method, started, context, error)

        return measured
