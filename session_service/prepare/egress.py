"""Which network endpoints a bundle's modules may connect to: the operator's list.

A provider's `base_url` is a tenant's choice, so without a list a bundle could point the
server at internal addresses (cloud metadata, the database, other services) or hand a
credential to a host of its own. `TANDEM_EGRESS_ALLOW` names the hosts allowed:

- `api.openai.com`: that host over https on port 443 (credentials never go out in the clear
  to a host named without a port);
- `api.example.com:8443`: that port only, http or https; `127.0.0.1:*`: any port;
- `*.openai.azure.com`: a glob over host names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_EGRESS_ALLOW = "api.openai.com,api.anthropic.com"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Rule:
    host: str
    port: str  # "" (the scheme's default), "*", or digits


def _rule(pattern: str) -> _Rule:
    host, _, port = pattern.strip().lower().rpartition(":")
    if not host or not (port == "*" or port.isdigit()):
        return _Rule(pattern.strip().lower(), "")
    return _Rule(host, port)


class EgressPolicy:
    """The operator's allowed hosts."""

    def __init__(self, text: str) -> None:
        self._rules = tuple(_rule(part) for part in text.split(",") if part.strip())

    def allows(self, url: str) -> bool:
        """Whether a module may connect to url (http or https only)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        if scheme not in _DEFAULT_PORTS or not host:
            return False
        actual = port if port is not None else _DEFAULT_PORTS[scheme]
        for rule in self._rules:
            if not fnmatch.fnmatchcase(host, rule.host):
                continue
            if rule.port == "*" or rule.port == str(actual):
                return True
            if not rule.port and scheme == "https" and actual == _DEFAULT_PORTS["https"]:
                return True
        return False

    def problem(self, key: str, url: str) -> tuple[str, str] | None:
        """A (config key, message) pair when url is not allowed."""
        if self.allows(url):
            return None
        return (
            key,
            "connects to a host the operator does not allow (TANDEM_EGRESS_ALLOW); only "
            "http(s) endpoints on the allowed hosts may be used",
        )

    def base_url_problems(
        self, config: Mapping[str, Any], default_url: str
    ) -> list[tuple[str, str]]:
        """A provider's check: its `base_url`, or the module's default endpoint, allowed."""
        url = config.get("base_url") or default_url
        found = self.problem("base_url", url) if isinstance(url, str) else None
        return [found] if found else []
