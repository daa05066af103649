"""The one mapping from domain errors to gRPC status with `google.rpc` details.

Every error carries `ErrorInfo` (domain `tandem.dev`). Validation errors add
`BadRequest.field_violations`, precondition and concurrency errors add `PreconditionFailure`,
quota errors add `QuotaFailure` (and `RetryInfo` for a rate limit), missing resources add
`ResourceInfo`, an unreachable database is UNAVAILABLE with `RetryInfo`. The code and message
in the packed `google.rpc.Status` equal the RPC's own, so `rpc_status.from_call` works
everywhere, and every value an error echoes is capped so the trailers fit any client.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from shared.db.faults import describe_exception, involves_database, is_transient
from shared.errors import (
    Aborted,
    AlreadyExists,
    ErrorKind,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    TandemError,
    Unavailable,
    Unimplemented,
    elide,
)
from shared.rpc.handlers import Behavior, WrappingInterceptor

ERROR_DOMAIN = "tandem.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_log = logging.getLogger(__name__)

STATUS_CODES: dict[ErrorKind, grpc.StatusCode] = {
    kind: getattr(grpc.StatusCode, kind.value) for kind in ErrorKind
}

# Caps on what an error echoes back. Trailers must stay well under the 8 KiB a default C-core
# client accepts: the packed status travels base64-encoded (4/3 of MAX_STATUS_BYTES) and the
# message once more, percent-encoded (up to 3 bytes per byte): about 5.5 KiB at most.
MAX_MESSAGE_BYTES = 512
MAX_ECHO_BYTES = 128  # ids, names, field paths, subjects, metadata values
MAX_DESCRIPTION_BYTES = 200
MAX_METADATA_ENTRIES = 8
MAX_LISTED_VIOLATIONS = 10
MAX_STATUS_BYTES = 3072
MORE_VIOLATIONS_KEY = "more_violations"

# A database that cannot be reached (or is restarting, or timed out) is worth a retry soon.
DATABASE_RETRY_SECONDS = 1.0


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _violations(error: TandemError) -> Sequence[Any]:
    return cast(Sequence[Any], getattr(error, "violations", ()))


def to_status(error: TandemError) -> status_pb2.Status:
    """Builds the rich `google.rpc.Status` for a domain error, every echoed value capped.

    Details list the first violations; the message and ErrorInfo metadata `more_violations`
    say how many more there are.
    """
    total = len(_violations(error))
    listed = min(total, MAX_LISTED_VIOLATIONS)
    while True:
        status = _build_status(error, listed, total)
        if status.ByteSize() <= MAX_STATUS_BYTES or listed == 0:
            return status
        listed -= 1


def _build_status(error: TandemError, listed: int, total: int) -> status_pb2.Status:
    code = STATUS_CODES[error.kind]
    message = elide(error.message, MAX_MESSAGE_BYTES)
    metadata = {
        elide(key, MAX_ECHO_BYTES // 2): elide(value, MAX_ECHO_BYTES)
        for key, value in list(error.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    if listed < total:
        more = total - listed
        message = f"{elide(error.message, MAX_MESSAGE_BYTES - 40)} ({more} more not listed)"
        metadata[MORE_VIOLATIONS_KEY] = str(more)
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.append(
        _pack(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
        )
    )
    shown = _violations(error)[:listed]
    if isinstance(error, InvalidArgument | OutOfRange) and shown:
        bad_request = error_details_pb2.BadRequest()
        for violation in shown:
            bad_request.field_violations.add(
                field=elide(violation.field, MAX_ECHO_BYTES),
                description=elide(
                    _located(violation.description, violation.line, violation.column),
                    MAX_DESCRIPTION_BYTES,
                ),
            )
        status.details.append(_pack(bad_request))
    if isinstance(error, FailedPrecondition | Aborted) and shown:
        failure = error_details_pb2.PreconditionFailure()
        for precondition in shown:
            failure.violations.add(
                type=elide(precondition.type, MAX_ECHO_BYTES),
                subject=elide(precondition.subject, MAX_ECHO_BYTES),
                description=elide(precondition.description, MAX_DESCRIPTION_BYTES),
            )
        status.details.append(_pack(failure))
    if isinstance(error, ResourceExhausted) and shown:
        quota = error_details_pb2.QuotaFailure()
        for exceeded in shown:
            quota.violations.add(
                subject=elide(exceeded.subject, MAX_ECHO_BYTES),
                description=elide(exceeded.description, MAX_DESCRIPTION_BYTES),
            )
        status.details.append(_pack(quota))
    if isinstance(error, ResourceExhausted | Unavailable) and error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=error.retry_after_seconds))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(error, NotFound | AlreadyExists) and error.resource_type:
        status.details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=elide(error.resource_type, MAX_ECHO_BYTES),
                    resource_name=elide(error.resource_name, MAX_ECHO_BYTES),
                    description=elide(error.message, MAX_DESCRIPTION_BYTES),
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
    where = method or "RPC handler"
    if is_transient(exc):
        # Clients (and Tandem's own channels) retry UNAVAILABLE; the cause goes to the log.
        _log.warning("unavailable in %s: %s", where, describe_exception(exc))
        if involves_database(exc):
            return Unavailable(
                "The database is unavailable; retry shortly.",
                reason="DATABASE_UNAVAILABLE",
                retry_after_seconds=DATABASE_RETRY_SECONDS,
            )
        return Unavailable(
            "A service this call needs is unavailable; retry shortly.",
            reason="DEPENDENCY_UNAVAILABLE",
            retry_after_seconds=DATABASE_RETRY_SECONDS,
        )
    # The exception's text may hold anything (SQL, secrets): it goes to the log, not the wire.
    if involves_database(exc):
        # A database error's text can quote the values a statement was given: log its kind,
        # codes and statement instead, with the frames that led to it.
        _log.error(
            "unexpected database error in %s: %s\n%s",
            where,
            describe_exception(exc),
            "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )
    else:
        _log.error("unexpected error in %s", where, exc_info=exc)
    return Internal("Internal error.", reason="INTERNAL")


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str = ""
) -> None:
    """Ends the RPC with the status for exc; never returns."""
    error = as_tandem_error(exc, method)
    status = to_status(error)
    # The capped message, so the RPC's own and the rich status's agree.
    await context.abort(
        STATUS_CODES[error.kind], status.message, trailing_metadata=trailing_metadata(status)
    )


UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def _wrap_unary(behavior: UnaryBehavior, method: str) -> UnaryBehavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
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


__all__ = [
    "ERROR_DOMAIN",
    "STATUS_CODES",
    "ErrorInterceptor",
    "abort",
    "as_tandem_error",
    "describe_exception",
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
