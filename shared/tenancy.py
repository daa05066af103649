"""Which tenant a call acts for.

Every table carries tenant_id and every query is scoped by it. Until authentication maps
callers to tenants, every call acts for the embedded default tenant.
"""

from __future__ import annotations

from typing import Any

import grpc

DEFAULT_TENANT = "default"


def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The tenant the current RPC acts for."""
    return DEFAULT_TENANT
