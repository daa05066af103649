"""Finding what a bundle reference names: a stored file of the tenant, or a shipped bundle.

The reference forms and the names they may stand for come from `shared.bundle.references`,
the same rules ConfigService warns by. Lookups go through ConfigService with the caller's
own credentials, so a reference never reaches another tenant's files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from session_service.prepare.shipped import shipped_bundle
from session_service.prepare.source import ConfigSource, FetchedConfig
from shared.bundle.references import (
    Reference,
    Site,
    candidate_names,
    candidate_paths,
    canonical_source,
)
from shared.errors import NotFound


@dataclass(frozen=True)
class Found:
    """What a reference resolved to: a stored config, or a shipped bundle (`config` None)."""

    name: str
    text: str
    config: FetchedConfig | None = None


@dataclass
class Lookups:
    """One preparation's lookups: each name is asked once, and every name asked is kept so
    that a config created later under it invalidates what was prepared."""

    asked: set[str] = field(default_factory=set)
    by_name: dict[str, FetchedConfig | None] = field(default_factory=dict)


class Resolver:
    """Resolves references among the caller's configs."""

    def __init__(self, client: ConfigSource) -> None:
        self._client = client

    async def resolve(
        self,
        reference: Reference,
        site: Site,
        lookups: Lookups,
        time_remaining: float | None,
    ) -> Found | None:
        """What reference names, written at site; None when nothing in the tenant has it."""
        if reference.is_source:
            return await self._by_source(reference, lookups, time_remaining)
        for name in candidate_names(reference, site):
            if reference.shipped:
                shipped = shipped_bundle(name) if site is Site.INCLUDE else None
                if shipped is not None:
                    return Found(name, shipped)
                continue
            found = await self._by_name(name, lookups, time_remaining)
            if found is not None:
                return Found(found.name, found.yaml_content, found)
        return None

    async def _by_name(
        self, name: str, lookups: Lookups, time_remaining: float | None
    ) -> FetchedConfig | None:
        lookups.asked.add(name)
        if name not in lookups.by_name:
            try:
                lookups.by_name[name] = await self._client.get_by_name(name, time_remaining)
            except NotFound:
                lookups.by_name[name] = None
        return lookups.by_name[name]

    async def _by_source(
        self, reference: Reference, lookups: Lookups, time_remaining: float | None
    ) -> Found | None:
        key = reference.source_key
        for path in candidate_paths(reference):
            # ConfigService compares addresses in canonical form (no `@REF`, `.git`, case of
            # the host); the check below keeps that promise whatever the server does.
            filter_text = f"path = {json.dumps(path)} AND source_uri = {json.dumps(key)}"
            for config in await self._client.find(filter_text, time_remaining):
                if canonical_source(config.source_uri) == key:
                    lookups.asked.add(config.name)
                    lookups.by_name[config.name] = config
                    return Found(config.name, config.yaml_content, config)
        return None
