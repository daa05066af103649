"""Which role each SessionService method needs."""

from __future__ import annotations

from session_service.servicer import SERVICE_NAME
from shared.auth.interceptor import AccessPolicy

_READ = ("GetSession", "ListSessions", "ListMessages", "StreamEvents", "PrepareConfig")
_WRITE = (
    "CreateSession",
    "StartSession",
    "CompleteSession",
    "FailSession",
    "TerminateSession",
    "ResumeSession",
    "AppendMessage",
    "SendMessage",
    "CancelTurn",
    "DecideApproval",
    "ForkSession",
    "RewindSession",
)

# DeleteSession (and any method added later without a line here) needs ADMIN: it erases a
# transcript for good.
POLICY = AccessPolicy.of(SERVICE_NAME, readers=_READ, writers=_WRITE)
