"""Typed settings shared by both services, read from `TANDEM_*` environment variables."""

from __future__ import annotations

from typing import Literal

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth.keys import KeyStore
from shared.rpc.server import ServerOptions
from shared.rpc.tls import server_credentials

MIB = 1024 * 1024


class ServiceSettings(BaseSettings):
    """What every Tandem server needs; each service subclasses it with its own address."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore", frozen=True)

    # Empty means the service's embedded SQLite file in the working directory.
    database_url: str = ""
    migrate_on_start: bool = True
    # Above the bundle size cap, so an oversized document gets a located INVALID_ARGUMENT
    # from validation rather than a bare RESOURCE_EXHAUSTED from the transport.
    max_receive_message_bytes: int = Field(default=16 * MIB, gt=0)
    max_send_message_bytes: int = Field(default=16 * MIB, gt=0)
    # How long in-flight RPCs get to finish after SIGTERM before they are cancelled.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # After SIGTERM, how long the server keeps accepting calls while reporting NOT_SERVING,
    # so calls already on their way (and balancers still routing here) are served, not cut.
    shutdown_drain_seconds: float = Field(default=1.0, ge=0)
    # A connection is closed after this long (0 = never) so clients re-resolve and spread
    # over new replicas; in-flight calls get the grace period to finish on it.
    max_connection_age_seconds: float = Field(default=0.0, ge=0)
    max_connection_age_grace_seconds: float = Field(default=30.0, ge=0)
    # API keys (YAML: name, tenant, role, sha256 per key). Neither set: development mode, in
    # which every call acts as the admin of the default tenant.
    api_keys_file: str = ""
    api_keys: str = ""
    # How often the key file is checked for changes (rotation without a restart).
    api_keys_reload_seconds: float = Field(default=2.0, ge=0)
    # TLS for this server: certificate and key (PEM). With a client CA too, callers must
    # present a certificate it signed (mutual TLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    log_level: str = "INFO"
    # `auto`: JSON lines when stderr is not a terminal (containers), text on a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"

    def effective_database_url(self, default_file: str) -> str:
        """The configured database, or the embedded SQLite file named default_file."""
        return self.database_url or f"sqlite:///{default_file}"

    def key_store(self) -> KeyStore:
        """The API keys this server accepts."""
        return KeyStore(
            path=self.api_keys_file,
            inline=self.api_keys,
            reload_seconds=self.api_keys_reload_seconds,
        )

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials, or None for plaintext."""
        if not self.tls_cert_file and not self.tls_key_file:
            if self.tls_client_ca_file:
                raise ValueError("TANDEM_TLS_CLIENT_CA_FILE needs TANDEM_TLS_CERT_FILE and KEY")
            return None
        if not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("TANDEM_TLS_CERT_FILE and TANDEM_TLS_KEY_FILE go together")
        return server_credentials(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    def server_options(self) -> ServerOptions:
        """Transport limits for servers and channels."""
        return ServerOptions(
            max_receive_message_bytes=self.max_receive_message_bytes,
            max_send_message_bytes=self.max_send_message_bytes,
            max_connection_age_seconds=self.max_connection_age_seconds,
            max_connection_age_grace_seconds=self.max_connection_age_grace_seconds,
        )
