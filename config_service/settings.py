"""ConfigService settings."""

from __future__ import annotations

from pydantic import Field

from config_service.configs.packages import PackageLimits
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
    # Configs kept in memory for GetConfig: the latest state of this many configs, and as
    # many revisions.
    config_cache_entries: int = Field(default=10_000, ge=1)
    # ImportBundle caps: all files together, each file, and how many files.
    package_max_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    package_max_file_bytes: int = Field(default=256 * 1024, gt=0)
    package_max_files: int = Field(default=2_000, gt=0)

    def request_limits(self) -> RequestLimits:
        """As for every service, with room for four times the document cap where one is sent."""
        limits = super().request_limits()
        methods = dict(limits.methods)
        for method in ("CreateConfig", "UpdateConfig"):
            name = f"/tandem.config.v1.ConfigService/{method}"
            methods[name] = max(methods[name], 4 * self.max_document_bytes)
        # Room for a package over its cap to reach validation and be refused, located.
        name = "/tandem.config.v1.ConfigService/ImportBundle"
        methods[name] = max(methods[name], 2 * self.package_max_bytes)
        return RequestLimits(limits.default_bytes, methods)

    def package_limits(self) -> PackageLimits:
        """The caps on one ImportBundle."""
        return PackageLimits(
            max_total_bytes=self.package_max_bytes,
            max_file_bytes=self.package_max_file_bytes,
            max_files=self.package_max_files,
        )

    @property
    def database(self) -> str:
        """This service's database URL."""
        return self.effective_database_url(DEFAULT_DATABASE_FILE)
