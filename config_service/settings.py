"""ConfigService settings."""

from __future__ import annotations

from shared.settings import ServiceSettings

DEFAULT_DATABASE_FILE = "tandem-config.db"


class ConfigServiceSettings(ServiceSettings):
    """`TANDEM_*` variables read by ConfigService."""

    config_service_listen: str = "127.0.0.1:50051"

    @property
    def database(self) -> str:
        """This service's database URL."""
        return self.effective_database_url(DEFAULT_DATABASE_FILE)
