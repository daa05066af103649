"""Which role each ConfigService method needs."""

from __future__ import annotations

from config_service.servicer import SERVICE_NAME
from shared.auth.identity import Role
from shared.auth.interceptor import AccessPolicy

_READ = ("GetConfig", "ListConfigs", "ListConfigRevisions", "ValidateConfig", "WatchConfigs")
_WRITE = (
    "CreateConfig",
    "UpdateConfig",
    "RollbackConfig",
    "AddTool",
    "AddProvider",
    "AddInclude",
    "RemoveTool",
    "RemoveProvider",
    "RemoveInclude",
)

# DeleteConfig (and any method added later without a line here) needs ADMIN: running
# sessions depend on configs, so removing one is an administrator's call.
POLICY = AccessPolicy(
    SERVICE_NAME,
    {**dict.fromkeys(_READ, Role.READER), **dict.fromkeys(_WRITE, Role.WRITER)},
    service_methods=frozenset({"WatchConfigs"}),
)
