"""What the operator lets host-touching tools do, beyond which folders they may reach.

Every tool module gets the session's `Sandbox`, which carries one `ToolPolicy`. A bundle
can narrow what a tool may do through its own config keys, never widen what is set here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class BashPolicy:
    """tool-bash: off unless the operator turns it on (TANDEM_TOOLS_BASH_*)."""

    enabled: bool = False
    # Whether commands may use the network; without it they run in a network namespace of
    # their own (loopback only) where the kernel allows one.
    network: bool = False
    # The most a bundle may ask for; its `timeout` config key can only lower it.
    timeout_seconds: float = 60.0
    max_output_bytes: int = 64 * KIB
    cpu_seconds: int = 60
    memory_bytes: int = 1024 * MIB
    max_processes: int = 128
    max_file_bytes: int = 256 * MIB


@dataclass(frozen=True)
class WebPolicy:
    """tool-web: where web_fetch may connect, and the web_search backend."""

    # Hosts or networks (`name`, `name:port`, `10.0.0.0/8`, `127.0.0.1:8080`) that web_fetch
    # may reach although they resolve to private, loopback or link-local addresses.
    private_allow: tuple[str, ...] = ()
    # A URL that answers `GET ?q=...` with search results as JSON; empty: no web_search.
    search_url: str = ""
    max_bytes: int = 2 * MIB
    timeout_seconds: float = 30.0
    max_redirects: int = 5


@dataclass(frozen=True)
class ToolPolicy:
    """Everything the operator decides for tool modules, per service."""

    bash: BashPolicy = field(default_factory=BashPolicy)
    web: WebPolicy = field(default_factory=WebPolicy)
