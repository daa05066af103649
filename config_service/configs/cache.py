"""A read-through cache of configs, so a GetConfig of an unchanged config touches no table.

Two maps, both bounded (least recently used goes first):
- a config's revisions never change once written, so they are kept until evicted;
- the latest state of each config (deleted or not) is kept until any config changes. Every
  write in this process invalidates it after its commit and before its response is sent,
  and on PostgreSQL every other replica's write does too when its NOTIFY arrives.

A read that started before an invalidation must not store what it read: the database may
have answered from before the write. So a reader takes `generation` before it reads and
stores only if no invalidation came in between. While the NOTIFY connection is down the
latest map is not trusted at all (`trusted`), since other replicas' writes go unheard.
"""

from __future__ import annotations

from collections.abc import Callable

from config_service.configs.model import Config
from shared.lru import Lru


def _always() -> bool:
    return True


class ConfigCache:
    """Latest configs by (tenant, id) and revisions by (tenant, id, revision)."""

    def __init__(self, capacity: int = 10_000, trusted: Callable[[], bool] = _always) -> None:
        self._latest: Lru[tuple[str, str], Config] = Lru(capacity)
        self._revisions: Lru[tuple[str, str, int], Config] = Lru(capacity)
        self._trusted = trusted
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def latest(self, tenant_id: str, config_id: str) -> Config | None:
        """The config's latest state as last read, if nothing has changed since."""
        found = self._latest.get((tenant_id, config_id)) if self._trusted() else None
        self._count(found)
        return found

    def revision(self, tenant_id: str, config_id: str, revision: int) -> Config | None:
        """The config as it was at revision, if it was read before."""
        found = self._revisions.get((tenant_id, config_id, revision))
        self._count(found)
        return found

    def keep_latest(self, tenant_id: str, config: Config, generation: int) -> None:
        """Stores a latest state read at generation, unless something changed since."""
        if generation == self.generation and self._trusted():
            self._latest.put((tenant_id, config.config_id), config)

    def keep_revision(self, tenant_id: str, config: Config) -> None:
        """Stores a revision; it never changes."""
        self._revisions.put((tenant_id, config.config_id, config.revision), config)

    def invalidate(self) -> None:
        """Some config changed (here or on another replica): forget every latest state."""
        self.generation += 1
        self._latest.clear()

    def _count(self, found: Config | None) -> None:
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
