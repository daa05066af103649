"""Typed exceptions for failed Tandem calls, decoded from the rich `google.rpc.Status`.

Tandem servers put `ErrorInfo`, `BadRequest`, `PreconditionFailure`, `QuotaFailure`,
`RetryInfo` and `ResourceInfo` details in the `grpc-status-details-bin` trailer; every
exception here carries them as plain Python values. Reads no config keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Servers append "(line N, column M)" to a located field violation's description.
_LOCATION = re.compile(r"\(line (\d+), column (\d+)\)\s*$")


class FieldViolation(NamedTuple):
    """One bad field of a request (`BadRequest`); a document's violations carry a line."""

    field: str
    description: str

    @property
    def line(self) -> int:
        """The 1-based line in the document the description names, or 0."""
        found = _LOCATION.search(self.description)
        return int(found.group(1)) if found else 0

    @property
    def column(self) -> int:
        """The 1-based column the description names, or 0."""
        found = _LOCATION.search(self.description)
        return int(found.group(2)) if found else 0


class PreconditionViolation(NamedTuple):
    """One unmet precondition (`PreconditionFailure`), for example a stale etag."""

    type: str
    subject: str
    description: str


class QuotaViolation(NamedTuple):
    """One exceeded quota (`QuotaFailure`)."""

    subject: str
    description: str


class ResourceInfo(NamedTuple):
    """The resource a NOT_FOUND or ALREADY_EXISTS error is about."""

    resource_type: str
    resource_name: str
    owner: str
    description: str


class TandemError(Exception):
    """A failed Tandem call, with every detail the server sent.

    `code` is the gRPC status name ("NOT_FOUND"), `reason` the ErrorInfo reason
    ("CONFIG_NOT_FOUND"). `str(error)` is a one-line summary; `explain()` shows every detail.
    """

    code: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        precondition_violations: Sequence[PreconditionViolation] = (),
        quota_violations: Sequence[QuotaViolation] = (),
        retry_delay: float | None = None,
        resource: ResourceInfo | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.precondition_violations: list[PreconditionViolation] = list(precondition_violations)
        self.quota_violations: list[QuotaViolation] = list(quota_violations)
        self.retry_delay = retry_delay
        self.resource = resource

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code}{reason}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, reason={self.reason!r})"
        )

    def explain(self) -> str:
        """Every detail of the error, one per line, for a person to read."""
        lines = [str(self)]
        for key, value in sorted(self.metadata.items()):
            lines.append(f"  {key}: {value}")
        for violation in self.field_violations:
            lines.append(f"  field {violation.field or '(request)'}: {violation.description}")
        for precondition in self.precondition_violations:
            lines.append(
                f"  precondition {precondition.type} {precondition.subject}: "
                f"{precondition.description}"
            )
        for quota in self.quota_violations:
            lines.append(f"  quota {quota.subject}: {quota.description}")
        if self.resource is not None:
            name = f"{self.resource.resource_type} {self.resource.resource_name}".strip()
            lines.append(f"  resource: {name}")
        if self.retry_delay is not None:
            lines.append(f"  retry after: {self.retry_delay:g}s")
        return "\n".join(lines)


class Cancelled(TandemError):
    """CANCELLED: the call was cancelled."""

    code = "CANCELLED"


class Unknown(TandemError):
    """UNKNOWN: an error the server did not classify."""

    code = "UNKNOWN"


class InvalidArgument(TandemError):
    """INVALID_ARGUMENT: a request or document is malformed; see `field_violations`."""

    code = "INVALID_ARGUMENT"


class DeadlineExceeded(TandemError):
    """DEADLINE_EXCEEDED: the call ran out of time."""

    code = "DEADLINE_EXCEEDED"


class NotFound(TandemError):
    """NOT_FOUND: the named resource does not exist; see `resource`."""

    code = "NOT_FOUND"


class AlreadyExists(TandemError):
    """ALREADY_EXISTS: a resource with that id or name exists."""

    code = "ALREADY_EXISTS"


class PermissionDenied(TandemError):
    """PERMISSION_DENIED: the API key's role may not do this."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(TandemError):
    """RESOURCE_EXHAUSTED: a quota or rate limit; see `quota_violations`, `retry_delay`."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(TandemError):
    """FAILED_PRECONDITION: the resource is not in a state that allows this."""

    code = "FAILED_PRECONDITION"


class Aborted(TandemError):
    """ABORTED: a concurrency conflict, such as an etag that no longer matches."""

    code = "ABORTED"


class OutOfRange(TandemError):
    """OUT_OF_RANGE: a position past the end, such as a future event sequence."""

    code = "OUT_OF_RANGE"


class Unimplemented(TandemError):
    """UNIMPLEMENTED: the server does not offer this call."""

    code = "UNIMPLEMENTED"


class Internal(TandemError):
    """INTERNAL: a server fault."""

    code = "INTERNAL"


class Unavailable(TandemError):
    """UNAVAILABLE: the server cannot be reached or is draining; safe to retry."""

    code = "UNAVAILABLE"


class DataLoss(TandemError):
    """DATA_LOSS: unrecoverable data loss."""

    code = "DATA_LOSS"


class Unauthenticated(TandemError):
    """UNAUTHENTICATED: no valid API key was sent."""

    code = "UNAUTHENTICATED"


ERROR_CLASSES: dict[str, type[TandemError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}

_CODE_NAMES: dict[int, str] = {code.value[0]: code.name for code in grpc.StatusCode}


def error_from_status(
    status: status_pb2.Status, *, code: str | None = None, message: str | None = None
) -> TandemError:
    """The typed error for a `google.rpc.Status`, with every detail it packs decoded."""
    code_name = code or _CODE_NAMES.get(status.code, "UNKNOWN")
    fields: dict[str, Any] = {}
    field_violations: list[FieldViolation] = []
    preconditions: list[PreconditionViolation] = []
    quotas: list[QuotaViolation] = []
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        failure = error_details_pb2.PreconditionFailure()
        quota = error_details_pb2.QuotaFailure()
        retry = error_details_pb2.RetryInfo()
        resource = error_details_pb2.ResourceInfo()
        if packed.Unpack(info):
            fields["reason"] = info.reason
            fields["domain"] = info.domain
            fields["metadata"] = dict(info.metadata)
        elif packed.Unpack(bad_request):
            field_violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
        elif packed.Unpack(failure):
            preconditions.extend(
                PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
            )
        elif packed.Unpack(quota):
            quotas.extend(QuotaViolation(v.subject, v.description) for v in quota.violations)
        elif packed.Unpack(retry):
            fields["retry_delay"] = retry.retry_delay.ToTimedelta().total_seconds()
        elif packed.Unpack(resource):
            fields["resource"] = ResourceInfo(
                resource.resource_type,
                resource.resource_name,
                resource.owner,
                resource.description,
            )
        # Detail kinds this client does not know are skipped: newer servers may add some.
    cls = ERROR_CLASSES.get(code_name, TandemError)
    return cls(
        message if message is not None else status.message,
        code=code_name,
        field_violations=field_violations,
        precondition_violations=preconditions,
        quota_violations=quotas,
        **fields,
    )


def error_from_rpc(error: grpc.RpcError) -> TandemError:
    """The typed error for a failed gRPC call (sync or asyncio)."""
    call: Any = error
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    code_name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    message = (call.details() if hasattr(call, "details") else None) or ""
    trailers = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    status = status_pb2.Status()
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status.ParseFromString(value)
            break
    return error_from_status(status, code=code_name, message=message or status.message)


__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionViolation",
    "QuotaViolation",
    "ResourceExhausted",
    "ResourceInfo",
    "TandemError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_from_rpc",
    "error_from_status",
]
