"""The caller of the current RPC, as the authentication interceptor established it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from enum import IntEnum

DEFAULT_TENANT = "default"


class Role(IntEnum):
    """What a caller may do; each role may do everything the roles below it may."""

    READER = 1
    WRITER = 2
    ADMIN = 3


# A service identity is not a tenant's user: it may only follow config changes of every
# tenant (SessionService's cache invalidation), and nothing else.
SERVICE_ROLE = "service"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: its tenant, role, and the credential to pass on downstream."""

    tenant_id: str
    role: Role | None
    subject: str
    # Forwarded on calls this RPC makes to other Tandem services, so they act for the same
    # caller rather than for the calling service.
    authorization: str = ""
    service: bool = False
    # The caller's team within the tenant (from its key or token claims); "" for none. What
    # TEAM visibility shares with.
    team: str = ""

    def may(self, needed: Role) -> bool:
        """Whether this caller's role covers needed."""
        return self.role is not None and self.role >= needed


DEVELOPMENT = Identity(DEFAULT_TENANT, Role.ADMIN, "development")

_current: contextvars.ContextVar[Identity] = contextvars.ContextVar(
    "tandem_identity", default=DEVELOPMENT
)


def current() -> Identity:
    """The identity the running RPC (or a task it started) acts as."""
    return _current.get()


def act_as(identity: Identity) -> contextvars.Token[Identity]:
    """Makes identity current for this task and the tasks it starts."""
    return _current.set(identity)
