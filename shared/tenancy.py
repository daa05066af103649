"""Which tenant a call acts for.

Every table carries tenant_id and every query is scoped by it. The authentication
interceptor sets the caller's identity; in development mode (no keys) it is the default
tenant.
"""

from __future__ import annotations

from shared.auth.identity import DEFAULT_TENANT, current

__all__ = ["DEFAULT_TENANT", "caller_tenant"]


def caller_tenant() -> str:
    """The tenant the current RPC acts for, as authentication established it."""
    return current().tenant_id
