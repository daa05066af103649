"""ConfigService settings."""

from __future__ import annotations

from pydantic import Field

from shared.rpc.requests import RequestLimits
from shared.settings import ServiceSettings

DEFAULT_DATABASE_FILE = "tandem-config.db"


class ConfigServiceSettings(ServiceSettings):
    """`TANDEM_*` variables read by ConfigService."""

    config_service_listen: str = "127.0.0.1:50051"
    # Bundle documents larger than this are refused before parsing.
    max_document_bytes: int = Field(default=256 * 1024, gt=0)
    # How many change-log entries a WatchConfigs client can resume from.
    change_retention: int = Field(default=10_000, gt=0)
    watch_poll_seconds: float = Field(default=5.0, gt=0)

    def request_limits(self) -> RequestLimits:
        """As for every service, with room for four times the document cap where one is sent."""
        limits = super().request_limits()
        methods = dict(limits.methods)
        for method in ("CreateConfig", "UpdateConfig"):
            name = f"/tandem.config.v1.ConfigService/{method}"
            methods[name] = max(methods[name], 4 * self.max_document_bytes)
        return RequestLimits(limits.default_bytes, methods)

    @property
    def database(self) -> str:
        """This service's database URL."""
        return self.effective_database_url(DEFAULT_DATABASE_FILE)
