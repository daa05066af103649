"""The one mapping from domain errors to gRPC status with `google.rpc` details.

Every error carries `ErrorInfo` (domain `tandem.dev`). Validation errors add
`BadRequest.field_violations`, precondition and concurrency errors add `PreconditionFailure`,
quota errors add `QuotaFailure` (and `RetryInfo` for a rate limit), missing resources add
`ResourceInfo`. The code and message in the packed `google.rpc.Status` equal the RPC's own,
so `rpc_status.from_call` works everywhere.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from shared.errors import (
    Aborted,
    AlreadyExists,
    ErrorKind,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    TandemError,
    Unimplemented,
)
from shared.rpc.handlers import Behavior, Handler, WrappingInterceptor
from shared.rpc.wire import find_bad_string

ERROR_DOMAIN = "tandem.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_log = logging.getLogger(__name__)

STATUS_CODES: dict[ErrorKind, grpc.StatusCode] = {
    kind: getattr(grpc.StatusCode, kind.value) for kind in ErrorKind
}


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: TandemError) -> status_pb2.Status:
    """Builds the rich `google.rpc.Status` for a domain error."""
    code = STATUS_CODES[error.kind]
    status = status_pb2.Status(code=code.value[0], message=error.message)
    status.details.append(
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
            )
        )
    )
    if isinstance(error, InvalidArgument | OutOfRange) and error.violations:
        bad_request = error_details_pb2.BadRequest()
        for violation in error.violations:
            bad_request.field_violations.add(
                field=violation.field,
                description=_located(violation.description, violation.line, violation.column),
            )
        status.details.append(_pack(bad_request))
    if isinstance(error, FailedPrecondition | Aborted) and error.violations:
        failure = error_details_pb2.PreconditionFailure()
        for precondition in error.violations:
            failure.violations.add(
                type=precondition.type,
                subject=precondition.subject,
                description=precondition.description,
            )
        status.details.append(_pack(failure))
    if isinstance(error, ResourceExhausted) and error.violations:
        quota = error_details_pb2.QuotaFailure()
        for exceeded in error.violations:
            quota.violations.add(subject=exceeded.subject, description=exceeded.description)
        status.details.append(_pack(quota))
    if isinstance(error, ResourceExhausted) and error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=error.retry_after_seconds))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(error, NotFound | AlreadyExists) and error.resource_type:
        status.details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=error.resource_type,
                    resource_name=error.resource_name,
                    description=error.message,
                )
            )
        )
    return status


def _located(description: str, line: int, column: int) -> str:
    if line <= 0:
        return description
    return f"{description} (line {line}, column {column})"


def trailing_metadata(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    """The trailer that carries a rich status to clients."""
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def as_tandem_error(exc: BaseException, method: str = "") -> TandemError:
    """Turns any exception a handler raised into the domain error reported for it."""
    if isinstance(exc, TandemError):
        return exc
    if isinstance(exc, NotImplementedError):
        return not_implemented(method or "This method")
    # The exception's text may hold anything (SQL, secrets): it goes to the log, not the wire.
    _log.error("unexpected error in %s", method or "RPC handler", exc_info=exc)
    return Internal("Internal error.", reason="INTERNAL")


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str = ""
) -> None:
    """Ends the RPC with the status for exc; never returns."""
    error = as_tandem_error(exc, method)
    status = to_status(error)
    await context.abort(
        STATUS_CODES[error.kind], error.message, trailing_metadata=trailing_metadata(status)
    )


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request protobuf could not parse, so the handler can refuse it."""

    data: bytes
    descriptor: Any


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            # grpc would answer INTERNAL; the client sent bad bytes, so it gets
            # INVALID_ARGUMENT naming the field.
            return UndecodableRequest(data, descriptor)

    return deserialize


def _refuse_undecodable(request: UndecodableRequest) -> InvalidArgument:
    bad = find_bad_string(request.descriptor, request.data) if request.descriptor else None
    if bad is None:
        return InvalidArgument(
            "The request could not be decoded.",
            reason="MALFORMED_REQUEST",
            violations=[FieldViolation("", "not a valid protobuf message of this RPC")],
        )
    return InvalidArgument(
        f"{bad.field} is not valid UTF-8 (byte {bad.byte_offset}).",
        reason="INVALID_UTF8",
        violations=[
            FieldViolation(
                bad.field, f"invalid UTF-8 at byte {bad.byte_offset}", bad.line, bad.column
            )
        ],
    )


UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def _wrap_unary(behavior: UnaryBehavior, method: str) -> UnaryBehavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            if isinstance(request, UndecodableRequest):
                raise _refuse_undecodable(request)
            result = behavior(request, context)
            return (await result) if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, method)

    return wrapper


def _wrap_stream(behavior: StreamBehavior, method: str) -> StreamBehavior:
    async def wrapper(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            if isinstance(request, UndecodableRequest):
                raise _refuse_undecodable(request)
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, method)

    return wrapper


class ErrorInterceptor(WrappingInterceptor):
    """Maps exceptions escaping any handler to a status with `google.rpc` details."""

    def wrap_unary(self, behavior: Behavior, method: str) -> Behavior:
        return _wrap_unary(cast(UnaryBehavior, behavior), method)

    def wrap_stream(self, behavior: Behavior, method: str) -> Behavior:
        return _wrap_stream(cast(StreamBehavior, behavior), method)

    def request_deserializer(self, handler: Handler) -> Callable[[bytes], Any] | None:
        return _tolerant(handler.request_deserializer)


__all__ = [
    "ERROR_DOMAIN",
    "STATUS_CODES",
    "ErrorInterceptor",
    "abort",
    "as_tandem_error",
    "not_implemented",
    "to_status",
    "trailing_metadata",
]


def not_implemented(method: str) -> Unimplemented:
    """The error for an RPC in the contract whose implementation has not landed yet."""
    return Unimplemented(
        f"{method} is not implemented yet.",
        reason="NOT_IMPLEMENTED",
        metadata={"method": method},
    )
