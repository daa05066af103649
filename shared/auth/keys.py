"""API keys: stored only as SHA-256 hashes, each naming a tenant and a role.

The key list is YAML (or JSON), from a file or an environment variable:

    keys:
      - name: team-a-ci          # shown in logs, never the key
        tenant: team-a
        role: writer             # reader, writer, admin, or service
        team: platform           # optional: the caller's team (TEAM visibility)
        sha256: 9f86d0818...     # `python -m shared.auth.keys hash <key>`

    tenants:                     # optional: overrides of the TANDEM_QUOTA_* defaults
      team-a:
        allow_literal_secrets: true
        quotas: {configs: 500, concurrent_turns: 8}

A file is re-read when it changes, so keys are added, rotated and revoked, and tenants' limits
changed, without a restart.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from shared.auth.identity import SERVICE_ROLE, Identity, Role
from shared.auth.reloading import ReloadingFile
from shared.quotas import NO_LIMITS, TenantPolicy, parse_policy

_log = logging.getLogger(__name__)

_ROLES = {"reader": Role.READER, "writer": Role.WRITER, "admin": Role.ADMIN}
# Stored on every config and session a caller creates.
MAX_TEAM_LENGTH = 128


class KeyFileError(ValueError):
    """The key list cannot be used; the message says where."""


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyEntry:
    """One stored key."""

    name: str
    tenant_id: str
    role: str
    team: str = ""

    def identity(self, authorization: str) -> Identity:
        """The caller this key authenticates."""
        if self.role == SERVICE_ROLE:
            return Identity(self.tenant_id, None, self.name, authorization, service=True)
        return Identity(self.tenant_id, _ROLES[self.role], self.name, authorization, team=self.team)


@dataclass(frozen=True)
class KeyList:
    """One parsed key list: active keys by hash, and tenants' policies."""

    entries: Mapping[str, KeyEntry]
    tenants: Mapping[str, TenantPolicy]


def parse_keys(text: str, source: str, defaults: TenantPolicy = NO_LIMITS) -> KeyList:
    """The key list; KeyFileError names the entry and field at fault."""
    try:
        document = YAML(typ="safe").load(text) or {}
    except YAMLError as exc:
        raise KeyFileError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("keys", []), list):
        raise KeyFileError(f"{source}: expected a mapping with a list under 'keys'")
    tenants = document.get("tenants", {})
    if not isinstance(tenants, Mapping):
        raise KeyFileError(f"{source}: 'tenants' must map tenant ids to their limits")
    policies: dict[str, TenantPolicy] = {}
    for tenant_id, raw in tenants.items():
        try:
            policies[str(tenant_id)] = parse_policy(raw, defaults, f"{source}: tenants.{tenant_id}")
        except ValueError as exc:
            raise KeyFileError(str(exc)) from None
    entries: dict[str, KeyEntry] = {}
    for index, raw in enumerate(document.get("keys", [])):
        where = f"{source}: keys[{index}]"
        if not isinstance(raw, Mapping):
            raise KeyFileError(f"{where}: expected a mapping")
        entry = _entry(raw, where)
        digest = str(raw.get("sha256", "")).strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise KeyFileError(f"{where}.sha256: expected 64 hex digits")
        if raw.get("revoked") is True:
            continue
        entries[digest] = entry
    return KeyList(entries, policies)


def _entry(raw: Mapping[str, Any], where: str) -> KeyEntry:
    for field in ("name", "tenant", "role"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise KeyFileError(f"{where}.{field}: required")
    role = raw["role"].strip().lower()
    if role not in _ROLES and role != SERVICE_ROLE:
        raise KeyFileError(f"{where}.role: one of reader, writer, admin, service")
    team = raw.get("team", "")
    if not isinstance(team, str) or len(team.strip()) > MAX_TEAM_LENGTH:
        raise KeyFileError(f"{where}.team: a string of at most {MAX_TEAM_LENGTH} characters")
    return KeyEntry(raw["name"].strip(), raw["tenant"].strip(), role, team.strip())


class KeyStore:
    """The current key list; re-read from its file when the file changes."""

    def __init__(
        self,
        *,
        path: str = "",
        inline: str = "",
        reload_seconds: float = 2.0,
        defaults: TenantPolicy = NO_LIMITS,
    ) -> None:
        self._defaults = defaults
        self._configured = bool(path or inline)
        self._inline = (
            parse_keys(inline, "TANDEM_API_KEYS", defaults) if inline else KeyList({}, {})
        )
        self._file = (
            ReloadingFile(Path(path), self._parse, reload_seconds, "API key list") if path else None
        )

    def _parse(self, text: str, source: str) -> KeyList:
        return parse_keys(text, source, self._defaults)

    @property
    def enabled(self) -> bool:
        """False when no key list is configured: development mode."""
        return self._configured

    def _lists(self) -> tuple[KeyList, ...]:
        # The file's entries win over inline ones with the same hash or tenant.
        return (self._inline,) if self._file is None else (self._inline, self._file.current())

    def lookup(self, key: str) -> KeyEntry | None:
        """The entry for key, if it is active."""
        digest = hash_key(key)
        found = None
        for keys in self._lists():
            found = keys.entries.get(digest, found)
        return found

    def policy(self, tenant_id: str) -> TenantPolicy:
        """The tenant's quotas and opt-ins: its own entry, else the defaults."""
        found = self._defaults
        for keys in self._lists():
            found = keys.tenants.get(tenant_id, found)
        return found


def main(argv: list[str] | None = None) -> int:
    """`python -m shared.auth.keys new|hash`: make a key, or hash one, for the key list."""
    parser = argparse.ArgumentParser(prog="python -m shared.auth.keys")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new", help="print a new random key and its sha256")
    hashing = commands.add_parser("hash", help="print the sha256 of a key read from stdin")
    hashing.add_argument("--env", help="read the key from this environment variable instead")
    args = parser.parse_args(argv)
    if args.command == "new":
        key = "tdm_" + secrets.token_urlsafe(32)
        print(f"key:    {key}\nsha256: {hash_key(key)}")
        return 0
    key = os.environ.get(args.env, "") if args.env else sys.stdin.readline().strip()
    if not key:
        print("no key given", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
