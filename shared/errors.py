"""The one domain exception tree.

Domain code raises these; `shared.rpc.status` maps each class to a gRPC status code and
`google.rpc` details in one place. Nothing here knows about gRPC or protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum


def elide(text: str, max_bytes: int) -> str:
    """text shortened to at most max_bytes of UTF-8 by cutting out its middle.

    Errors echo what the client sent (ids, names, keys); a long value is cut so the error
    still fits in a response's trailers, keeping both ends, which are what people recognize.
    """
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    marker = f"…[{len(encoded)} bytes]…"
    room = max_bytes - len(marker.encode())
    if room < 8:
        # Too little room to show both ends: the start alone.
        return encoded[: max(max_bytes - 3, 0)].decode("utf-8", "ignore") + "…"
    head = encoded[: room * 2 // 3].decode("utf-8", "ignore")
    tail = encoded[len(encoded) - room // 3 :].decode("utf-8", "ignore")
    return f"{head}{marker}{tail}"


class ErrorKind(Enum):
    """The canonical error classes; the RPC layer maps each to a status code."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    """A located problem with one field of a request."""

    field: str
    description: str
    # Set when the field holds a document (YAML): 1-based, 0 when unknown.
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition: `type` is UPPER_SNAKE, `subject` names what it applies to."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exceeded quota."""

    subject: str
    description: str


@dataclass
class TandemError(Exception):
    """Base of every error Tandem reports to a caller.

    `reason` is the UPPER_SNAKE `ErrorInfo.reason`; `metadata` goes into `ErrorInfo.metadata`
    and should let a client act (for example the id of the turn that blocks it).
    """

    message: str
    reason: str = "ERROR"
    metadata: Mapping[str, str] = field(default_factory=dict)

    kind = ErrorKind.INTERNAL

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidArgument(TandemError):
    """The request itself is wrong, whatever the state of the system."""

    reason: str = "INVALID_ARGUMENT"
    violations: Sequence[FieldViolation] = ()

    kind = ErrorKind.INVALID_ARGUMENT


@dataclass
class NotFound(TandemError):
    """The named resource does not exist (or belongs to another tenant)."""

    reason: str = "NOT_FOUND"
    resource_type: str = ""
    resource_name: str = ""

    kind = ErrorKind.NOT_FOUND


@dataclass
class AlreadyExists(TandemError):
    """A resource with that id or unique name exists already."""

    reason: str = "ALREADY_EXISTS"
    resource_type: str = ""
    resource_name: str = ""

    kind = ErrorKind.ALREADY_EXISTS


@dataclass
class FailedPrecondition(TandemError):
    """The system is not in a state that allows this; retrying as is will not help."""

    reason: str = "FAILED_PRECONDITION"
    violations: Sequence[PreconditionViolation] = ()

    kind = ErrorKind.FAILED_PRECONDITION


@dataclass
class Aborted(TandemError):
    """A concurrency conflict, such as a stale etag: re-read and retry."""

    reason: str = "ABORTED"
    violations: Sequence[PreconditionViolation] = ()

    kind = ErrorKind.ABORTED


@dataclass
class OutOfRange(TandemError):
    """A position (sequence, revision, page) past what exists or is retained."""

    reason: str = "OUT_OF_RANGE"
    violations: Sequence[FieldViolation] = ()

    kind = ErrorKind.OUT_OF_RANGE


@dataclass
class ResourceExhausted(TandemError):
    """A quota or limit was reached."""

    reason: str = "RESOURCE_EXHAUSTED"
    violations: Sequence[QuotaViolation] = ()
    # For a rate limit: when a retry can succeed (sent as RetryInfo).
    retry_after_seconds: float | None = None

    kind = ErrorKind.RESOURCE_EXHAUSTED


@dataclass
class Unauthenticated(TandemError):
    """Missing or invalid credentials."""

    reason: str = "UNAUTHENTICATED"

    kind = ErrorKind.UNAUTHENTICATED


@dataclass
class PermissionDenied(TandemError):
    """The caller is known but may not do this."""

    reason: str = "PERMISSION_DENIED"

    kind = ErrorKind.PERMISSION_DENIED


@dataclass
class Unavailable(TandemError):
    """A dependency is down; the call may succeed if retried."""

    reason: str = "UNAVAILABLE"
    # When a retry is worth trying (sent as RetryInfo).
    retry_after_seconds: float | None = None

    kind = ErrorKind.UNAVAILABLE


@dataclass
class DeadlineExceeded(TandemError):
    """The work did not finish before the caller's deadline."""

    reason: str = "DEADLINE_EXCEEDED"

    kind = ErrorKind.DEADLINE_EXCEEDED


@dataclass
class Cancelled(TandemError):
    """The caller or an operator cancelled the work."""

    reason: str = "CANCELLED"

    kind = ErrorKind.CANCELLED


@dataclass
class Unimplemented(TandemError):
    """The RPC exists in the contract but is not served yet."""

    reason: str = "UNIMPLEMENTED"

    kind = ErrorKind.UNIMPLEMENTED


@dataclass
class Internal(TandemError):
    """A bug or an unexpected failure; its details stay in the logs."""

    reason: str = "INTERNAL"

    kind = ErrorKind.INTERNAL
