"""SessionService settings."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings

DEFAULT_DATABASE_FILE = "tandem-session.db"


class SessionServiceSettings(ServiceSettings):
    """`TANDEM_*` variables read by SessionService."""

    session_service_listen: str = "127.0.0.1:50052"
    # A `dns:///host:port` target spreads calls over every ConfigService replica.
    config_service_target: str = "127.0.0.1:50051"
    # Upper bound on any one call to ConfigService, within the caller's own deadline.
    config_call_timeout_seconds: float = Field(default=5.0, gt=0)
    # How many prepared bundles (config revisions) the cache keeps.
    prepared_cache_size: int = Field(default=256, gt=0)
    # Pause between attempts to re-open the config change stream.
    config_watch_retry_seconds: float = Field(default=1.0, gt=0)

    @property
    def database(self) -> str:
        """This service's database URL."""
        return self.effective_database_url(DEFAULT_DATABASE_FILE)
