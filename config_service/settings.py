"""ConfigService settings."""

from __future__ import annotations

from pydantic import Field

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

    @property
    def database(self) -> str:
        """This service's database URL."""
        return self.effective_database_url(DEFAULT_DATABASE_FILE)
