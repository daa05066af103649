"""Which role each ConfigService method needs."""

from __future__ import annotations

from config_service.servicer import SERVICE_NAME
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
    "ImportBundle",
)

# DeleteConfig (and any method added later without a line here) needs ADMIN: running
# sessions depend on configs, so removing one is an administrator's call.
POLICY = AccessPolicy.of(
    SERVICE_NAME, readers=_READ, writers=_WRITE, service_methods=["WatchConfigs"]
)
