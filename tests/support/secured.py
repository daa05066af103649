"""Both services behind API keys, for the security and limits tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from session_service.prepare.modules import ModuleRegistry
from shared.auth.keys import hash_key
from shared.telemetry.setup import Telemetry
from tests.support.pair import Stack, running_pair

KEYS = {
    "a-admin": ("tenant-a", "admin"),
    "a-writer": ("tenant-a", "writer"),
    "a-reader": ("tenant-a", "reader"),
    "b-admin": ("tenant-b", "admin"),
    "b-writer": ("tenant-b", "writer"),
    "session-service": ("system", "service"),
}


# One tenant's callers for the visibility tests: the owner and a teammate in team "a",
# another caller in team "b", and an admin of no team (name: tenant, role, team).
TEAM_KEYS: dict[str, tuple[str, ...]] = {
    "owner": ("tenant-v", "writer", "a"),
    "mate": ("tenant-v", "writer", "a"),
    "other": ("tenant-v", "writer", "b"),
    "admin": ("tenant-v", "admin"),
    "session-service": ("system", "service"),
}


def secret(name: str) -> str:
    """The API key of the named entry."""
    return f"tdm_{name}_0123456789abcdef"


def key_file(
    path: Path,
    keys: Mapping[str, tuple[str, ...]],
    revoked: frozenset[str] = frozenset(),
    tenants: dict[str, Any] | None = None,
) -> None:
    """Writes a key list (JSON is YAML), with tenants' limits when given; a key's third
    field, when there is one, is its team."""
    entries = [
        {
            "name": name,
            "tenant": tenant,
            "role": role,
            "sha256": hash_key(secret(name)),
            **({"team": team[0]} if team else {}),
            **({"revoked": True} if name in revoked else {}),
        }
        for name, (tenant, role, *team) in keys.items()
    ]
    path.write_text(json.dumps({"keys": entries, **({"tenants": tenants} if tenants else {})}))


def auth(name: str) -> tuple[tuple[str, str]]:
    """Call metadata carrying the named key."""
    return (("authorization", f"Bearer {secret(name)}"),)


@dataclass
class Secured(Stack):
    """Both services behind the keys in the file at keys; the stubs carry no key."""

    keys: Path


@contextlib.asynccontextmanager
async def secured_stack(
    database_url: str,
    tmp_path: Path,
    *,
    tenants: dict[str, Any] | None = None,
    telemetry: Telemetry | None = None,
    modules: ModuleRegistry | None = None,
    keys: Mapping[str, tuple[str, ...]] = KEYS,
    **settings: Any,
) -> AsyncIterator[Secured]:
    """ConfigService and SessionService on free ports, with keys (KEYS unless given, and
    tenants) in a key file.

    settings go to both services.
    """
    keys_path = tmp_path / "keys.json"
    key_file(keys_path, keys, tenants=tenants)
    common: dict[str, Any] = {
        "api_keys_file": str(keys_path),
        "api_keys_reload_seconds": 0.05,
        **settings,
    }
    async with running_pair(
        database_url,
        telemetry=telemetry,
        modules=modules,
        common=common,
        session={"config_service_api_key": secret("session-service")},
    ) as pair:
        yield Secured(pair.config_app, pair.session_app, pair.configs, pair.sessions, keys_path)
