"""Typed settings shared by both services, read from `TANDEM_*` environment variables."""

from __future__ import annotations

from typing import Literal

import grpc
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth.keys import KeyStore
from shared.auth.tokens import JwtVerifier
from shared.listing import PageTokenKeys
from shared.quotas import Quotas, TenantPolicy
from shared.rpc.requests import RequestLimits
from shared.rpc.server import ServerOptions
from shared.rpc.tls import server_credentials

KIB = 1024
MIB = 1024 * KIB

_CONFIG = "/tandem.config.v1.ConfigService/"
_SESSION = "/tandem.session.v1.SessionService/"
# What each method needs, with room for an over-long field to reach validation and come back
# as a located INVALID_ARGUMENT; every method not listed carries ids, filters, tokens and tags
# only (DEFAULT_REQUEST_BYTES). Checked after authentication, before decoding.
DEFAULT_REQUEST_BYTES = 256 * KIB
REQUEST_BYTES: dict[str, int] = {
    # A bundle document (256 KiB cap) with its name, description and tags.
    _CONFIG + "CreateConfig": 1 * MIB,
    _CONFIG + "UpdateConfig": 1 * MIB,
    # Dry runs answer with findings in the body, so even a far too large document gets them.
    _CONFIG + "ValidateConfig": 16 * MIB,
    # A whole bundle package: many documents and context files.
    _CONFIG + "ImportBundle": 16 * MIB,
    # One module's settings (a Struct of at most 64 KiB).
    _CONFIG + "AddTool": 1 * MIB,
    _CONFIG + "AddProvider": 1 * MIB,
    # A transcript message of up to 1,000,000 characters (up to 4 bytes each) and tool calls.
    _SESSION + "AppendMessage": 8 * MIB,
    # A user message of up to 256 Ki characters and a per-turn context Struct of 64 KiB.
    _SESSION + "SendMessage": 2 * MIB,
}


class ServiceSettings(BaseSettings):
    """What every Tandem server needs; each service subclasses it with its own address."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore", frozen=True)

    # Empty means the service's embedded SQLite file in the working directory.
    database_url: str = ""
    migrate_on_start: bool = True
    # Above the bundle size cap, so an oversized document gets a located INVALID_ARGUMENT
    # from validation rather than a bare RESOURCE_EXHAUSTED from the transport.
    # Nothing larger is read from a client before it is authenticated; a server lowers it to
    # its largest method's request cap (REQUEST_BYTES: ConfigService 16 MiB, SessionService
    # 8 MiB). For outgoing channels, the largest response accepted.
    max_receive_message_bytes: int = Field(default=16 * MIB, gt=0)
    max_send_message_bytes: int = Field(default=16 * MIB, gt=0)
    # Secrets that sign page tokens, comma-separated: the first signs, all verify (list the old
    # one second while rotating). Every replica of a service needs the same value. Empty: a
    # key derived from the service's database URL, which replicas share too.
    page_token_key: str = ""
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
    # How often the key and JWKS files are checked for changes (rotation without a restart).
    api_keys_reload_seconds: float = Field(default=2.0, ge=0)
    # JWT bearer tokens from an identity provider, verified against its public keys (a JWKS
    # file, re-read when it changes). The tenant and role come from the named claims, and the
    # caller's team (optional, for TEAM visibility) from jwt_team_claim.
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_jwks_file: str = ""
    jwt_tenant_claim: str = "tenant"
    jwt_role_claim: str = "role"
    jwt_team_claim: str = "team"
    jwt_leeway_seconds: float = Field(default=30.0, ge=0)
    # Every tenant's limits unless the key list's `tenants:` section says otherwise; 0 is
    # unlimited. Configs and sessions count what a tenant holds; turns, those running now.
    quota_configs: int = Field(default=10_000, ge=0)
    quota_sessions: int = Field(default=100_000, ge=0)
    quota_concurrent_turns: int = Field(default=64, ge=0)
    quota_send_messages_per_minute: int = Field(default=600, ge=0)
    # Messages that may be sent back to back before the per-minute rate applies (0: a full
    # minute's worth).
    quota_send_message_burst: int = Field(default=0, ge=0)
    # The longest idle ttl CreateSession may ask for, in seconds (SessionService).
    quota_session_ttl_max_seconds: int = Field(default=0, ge=0)
    # Literal credentials in bundles are refused unless a tenant opts in (here for every
    # tenant, or per tenant in the key list).
    allow_literal_secrets: bool = False
    # RPCs one server runs at once, streams included; more are refused RESOURCE_EXHAUSTED
    # before reaching a handler (0: no cap).
    maximum_concurrent_rpcs: int = Field(default=4096, ge=0)
    # TLS for this server: certificate and key (PEM). With a client CA too, callers must
    # present a certificate it signed (mutual TLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    log_level: str = "INFO"
    # `auto`: JSON lines when stderr is not a terminal (containers), text on a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"

    @property
    def database(self) -> str:
        """This service's database URL (each service names its own embedded file)."""
        return self.database_url

    @field_validator("page_token_key")
    @classmethod
    def _page_token_key_is_usable(cls, value: str) -> str:
        if value:
            PageTokenKeys.from_setting(value)
        return value

    def effective_database_url(self, default_file: str) -> str:
        """The configured database, or the embedded SQLite file named default_file."""
        return self.database_url or f"sqlite:///{default_file}"

    def key_store(self) -> KeyStore:
        """The API keys this server accepts."""
        return KeyStore(
            path=self.api_keys_file,
            inline=self.api_keys,
            reload_seconds=self.api_keys_reload_seconds,
            defaults=self.tenant_defaults(),
        )

    def token_verifier(self) -> JwtVerifier | None:
        """The JWT verifier, or None when no identity provider is configured."""
        fields = (self.jwt_issuer, self.jwt_audience, self.jwt_jwks_file)
        if not any(fields):
            return None
        if not all(fields):
            raise ValueError(
                "TANDEM_JWT_ISSUER, TANDEM_JWT_AUDIENCE and TANDEM_JWT_JWKS_FILE go together"
            )
        return JwtVerifier(
            issuer=self.jwt_issuer,
            audience=self.jwt_audience,
            jwks_file=self.jwt_jwks_file,
            tenant_claim=self.jwt_tenant_claim,
            role_claim=self.jwt_role_claim,
            team_claim=self.jwt_team_claim,
            leeway_seconds=self.jwt_leeway_seconds,
            reload_seconds=self.api_keys_reload_seconds,
        )

    def tenant_defaults(self) -> TenantPolicy:
        """The policy of a tenant the key list says nothing about."""
        return TenantPolicy(
            Quotas(
                configs=self.quota_configs,
                sessions=self.quota_sessions,
                concurrent_turns=self.quota_concurrent_turns,
                send_messages_per_minute=self.quota_send_messages_per_minute,
                send_message_burst=self.quota_send_message_burst,
                session_ttl_max_seconds=self.quota_session_ttl_max_seconds,
            ),
            allow_literal_secrets=self.allow_literal_secrets,
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

    def request_limits(self) -> RequestLimits:
        """Each method's request cap."""
        return RequestLimits(DEFAULT_REQUEST_BYTES, dict(REQUEST_BYTES))

    def page_token_keys(self) -> PageTokenKeys:
        """The keys page tokens are signed with."""
        if self.page_token_key:
            return PageTokenKeys.from_setting(self.page_token_key)
        return PageTokenKeys.derived(self.database)

    def server_options(self) -> ServerOptions:
        """Transport limits for servers and channels."""
        return ServerOptions(
            max_receive_message_bytes=self.max_receive_message_bytes,
            max_send_message_bytes=self.max_send_message_bytes,
            max_connection_age_seconds=self.max_connection_age_seconds,
            max_connection_age_grace_seconds=self.max_connection_age_grace_seconds,
            maximum_concurrent_rpcs=self.maximum_concurrent_rpcs,
            request_limits=self.request_limits(),
            page_token_keys=self.page_token_keys(),
        )
