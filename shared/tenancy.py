"""Which tenant a call acts for.

Every table carries tenant_id and every query is scoped by it. The authentication
interceptor sets the caller's identity; in development mode (no keys) it is the default
tenant.
"""

from __future__ import annotations

from typing import Any

import grpc

from shared.auth.identity import DEFAULT_TENANT, current

__all__ = ["DEFAULT_TENANT", "tenant_of"]


def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The tenant the current RPC acts for."""
    return current().tenant_id
