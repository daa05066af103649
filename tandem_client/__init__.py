"""Tandem's public Python client: ConfigService and SessionService, async and sync.

    from tandem_client import AsyncTandem

    async with AsyncTandem("127.0.0.1:50051", session_target="127.0.0.1:50052") as client:
        config = await client.configs.create("demo", document)
        session = await client.sessions.create(config.config_id, start=True)
        async for event in client.sessions.chat(session.session_id, "Hello"):
            print(event.text, end="")

Results are the dataclasses of `tandem_client.models`; failures raise the TandemError
subclasses of `tandem_client.errors`. Reads no config keys.
"""

from __future__ import annotations

from tandem_client.client import AsyncConfigs, AsyncSessions, AsyncTandem
from tandem_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    QuotaViolation,
    ResourceExhausted,
    ResourceInfo,
    TandemError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from tandem_client.models import (
    TERMINAL_KINDS,
    ApprovalDecision,
    BundleSummary,
    ChatResult,
    Config,
    ConfigChange,
    Event,
    ImportResult,
    Message,
    Page,
    PreparedAgent,
    PreparedContext,
    PreparedModule,
    PrepareResult,
    Session,
    ToolCall,
    Usage,
    ValidationResult,
    Violation,
    text_of,
)
from tandem_client.sync import BlockingIterator, Configs, Sessions, Tandem

__all__ = [
    "TERMINAL_KINDS",
    "Aborted",
    "AlreadyExists",
    "ApprovalDecision",
    "AsyncConfigs",
    "AsyncSessions",
    "AsyncTandem",
    "BlockingIterator",
    "BundleSummary",
    "Cancelled",
    "ChatResult",
    "Config",
    "ConfigChange",
    "Configs",
    "DataLoss",
    "DeadlineExceeded",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "ImportResult",
    "Internal",
    "InvalidArgument",
    "Message",
    "NotFound",
    "OutOfRange",
    "Page",
    "PermissionDenied",
    "PreconditionViolation",
    "PrepareResult",
    "PreparedAgent",
    "PreparedContext",
    "PreparedModule",
    "QuotaViolation",
    "ResourceExhausted",
    "ResourceInfo",
    "Session",
    "Sessions",
    "Tandem",
    "TandemError",
    "ToolCall",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "Usage",
    "ValidationResult",
    "Violation",
    "text_of",
]
