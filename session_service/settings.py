"""SessionService settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
from pydantic import Field, field_validator

from session_service.prepare.egress import DEFAULT_EGRESS_ALLOW
from session_service.tool_policy import BashPolicy, ToolPolicy, WebPolicy
from session_service.workspace import Workspaces, default_root, parse_roots
from shared.rpc.tls import channel_credentials
from shared.settings import ServiceSettings

DEFAULT_DATABASE_FILE = "tandem-session.db"


class SessionServiceSettings(ServiceSettings):
    """`TANDEM_*` variables read by SessionService."""

    session_service_listen: str = "127.0.0.1:50052"
    # A `dns:///host:port` target spreads calls over every ConfigService replica.
    config_service_target: str = "127.0.0.1:50051"
    # SessionService's own key (role `service`) for following config changes of every tenant;
    # every other call to ConfigService carries the caller's key.
    config_service_api_key: str = ""
    # TLS to ConfigService: the CA that signed its certificate, and (for mutual TLS) this
    # service's client certificate and key. All empty: plaintext.
    config_service_tls_ca_file: str = ""
    config_service_tls_cert_file: str = ""
    config_service_tls_key_file: str = ""
    # Upper bound on any one call to ConfigService, within the caller's own deadline.
    config_call_timeout_seconds: float = Field(default=5.0, gt=0)
    # How many prepared bundles (config revisions) the cache keeps.
    prepared_cache_size: int = Field(default=256, gt=0)
    # Pause between attempts to re-open the config change stream.
    config_watch_retry_seconds: float = Field(default=1.0, gt=0)
    # A running turn renews its lease every third of this; a turn whose replica died is
    # failed by the next request on its session once the lease has run out.
    turn_lease_seconds: float = Field(default=15.0, gt=0)
    # Turns a session may hold queued behind its active one (SendMessage if_busy).
    turn_queue_max: int = Field(default=8, gt=0)
    # Text deltas are written in batches: at most this long after they arrive ...
    event_flush_seconds: float = Field(default=0.025, gt=0)
    # ... or as soon as this many are waiting.
    event_flush_max: int = Field(default=64, gt=0)
    # Environment variables every tenant's bundles may reference (`${NAME}`): comma-separated
    # names or globs. Empty: none; bundles then reach only their tenant's own secrets.
    bundle_env_allow: str = ""
    # A folder of per-tenant secret files, `<dir>/<tenant>/<NAME>`, for `${NAME}` references.
    tenant_secrets_dir: str = ""
    # Where per-session workspaces live; empty: `workspaces` beside the SQLite database, or a
    # folder in the temp directory.
    workspace_root: str = ""
    # Host folders file tools may reach besides the session's workspace, comma-separated.
    tool_allowed_roots: str = ""
    # tool-bash: off unless enabled. Commands get no network unless TOOLS_BASH_NETWORK is set;
    # the rest are ceilings a bundle's own settings can only lower.
    tools_bash_enabled: bool = False
    tools_bash_network: bool = False
    tools_bash_timeout_seconds: float = Field(default=60.0, gt=0)
    tools_bash_max_output_bytes: int = Field(default=64 * 1024, gt=0)
    tools_bash_cpu_seconds: int = Field(default=60, gt=0)
    tools_bash_memory_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    tools_bash_max_processes: int = Field(default=128, gt=0)
    tools_bash_max_file_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # tool-web: private, loopback or link-local destinations web_fetch may still reach
    # (comma-separated hosts, host:port or CIDR networks), and the web_search backend URL.
    tools_web_private_allow: str = ""
    tools_web_search_url: str = ""
    tools_web_max_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    tools_web_timeout_seconds: float = Field(default=30.0, gt=0)
    # Agents (tool-delegate, tool-task) run as child sessions: how deep they may nest (a
    # client's session is depth 0), and how many one turn runs at once.
    agents_max_depth: int = Field(default=3, ge=0)
    agents_max_concurrent: int = Field(default=4, gt=0)
    # Approvals that wait past their timeout are denied: at the deadline by the replica
    # that paused the turn, and within this long by any replica (should that one be gone).
    approval_sweep_seconds: float = Field(default=30.0, gt=0)
    # Session lifetimes (seconds, 0: none). A session idle (no turn, message or lifecycle
    # change) for its ttl is COMPLETED with IDLE_TIMEOUT; one that ended is deleted, with its
    # workspace, delete_after later. CreateSession may ask for its own, ttl at most the
    # tenant's quota (TANDEM_QUOTA_SESSION_TTL_MAX_SECONDS, or its key-file entry).
    session_ttl_seconds: float = Field(default=0.0, ge=0)
    session_delete_after_seconds: float = Field(default=0.0, ge=0)
    # The lifetime sweeper sleeps until the next deadline it knows of; deadlines other
    # replicas set (or that turns moved) are picked up within this long.
    session_sweep_seconds: float = Field(default=30.0, gt=0)
    # Event retention (TANDEM_EVENT_RETENTION, seconds or an ISO 8601 duration such as P7D;
    # 0: keep every event). The deltas of turns that ended longer ago than this are removed
    # from the event log; the transcript keeps their text. Checked every sweep period.
    event_retention: timedelta = Field(default=timedelta(0), ge=timedelta(0))
    event_retention_sweep_seconds: float = Field(default=300.0, gt=0)
    # Hosts provider modules may connect to (`host`, `host:port`, `host:*`, globs).
    egress_allow: str = DEFAULT_EGRESS_ALLOW

    @field_validator("event_retention", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        # Environment variables are text: "3600" means seconds, as it does in every other
        # TANDEM_*_SECONDS setting; ISO 8601 ("P7D") is taken as it is.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    def workspaces(self) -> Workspaces:
        """The session workspaces and the extra roots tools may reach."""
        root = Path(self.workspace_root) if self.workspace_root else default_root(self.database)
        return Workspaces(root, parse_roots(self.tool_allowed_roots), self.tool_policy())

    def tool_policy(self) -> ToolPolicy:
        """What the operator lets tool modules do (TANDEM_TOOLS_*)."""
        return ToolPolicy(
            bash=BashPolicy(
                enabled=self.tools_bash_enabled,
                network=self.tools_bash_network,
                timeout_seconds=self.tools_bash_timeout_seconds,
                max_output_bytes=self.tools_bash_max_output_bytes,
                cpu_seconds=self.tools_bash_cpu_seconds,
                memory_bytes=self.tools_bash_memory_bytes,
                max_processes=self.tools_bash_max_processes,
                max_file_bytes=self.tools_bash_max_file_bytes,
            ),
            web=WebPolicy(
                private_allow=tuple(
                    part.strip() for part in self.tools_web_private_allow.split(",") if part.strip()
                ),
                search_url=self.tools_web_search_url,
                max_bytes=self.tools_web_max_bytes,
                timeout_seconds=self.tools_web_timeout_seconds,
            ),
        )

    def config_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials for the channel to ConfigService, or None for plaintext."""
        files = (
            self.config_service_tls_ca_file,
            self.config_service_tls_cert_file,
            self.config_service_tls_key_file,
        )
        if not any(files):
            return None
        return channel_credentials(*files)

    @property
    def database(self) -> str:
        """This service's database URL."""
        return self.effective_database_url(DEFAULT_DATABASE_FILE)
