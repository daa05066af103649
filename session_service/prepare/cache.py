"""The prepared-bundle cache: a bounded LRU shared by every session on a revision."""

from __future__ import annotations

from dataclasses import dataclass

from session_service.prepare.model import PreparedBundle
from shared.lru import Lru

# (tenant, config_id, revision), and for a session with overrides the digest of them: every
# variant of a config shares its config_id, so evicting the config drops them all.
Key = tuple[str, str, int] | tuple[str, str, int, str]

# Past this many remembered invalidations the memory is reset (which only costs in-flight
# preparations their chance to be cached).
_MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class CacheStats:
    """Counters for tests and metrics."""

    hits: int
    misses: int
    evictions: int
    size: int


class PreparedCache:
    """Prepared bundles by (tenant, config_id, revision[, overrides digest]), least recently
    used out first.

    `generation` grows with every invalidation. A preparation reads it before it starts; its
    result is stored only if nothing it was built from (its config, or a name it included)
    was invalidated since, so a slow preparation cannot put a stale bundle back.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._entries: Lru[Key, PreparedBundle] = Lru(capacity)
        self._hits = self._misses = self._evictions = 0
        self.generation = 0
        self._invalidated: dict[str, int] = {}  # "id:…" or "name:…" -> generation
        self._cleared_at = 0

    def get(self, key: Key) -> PreparedBundle | None:
        """The cached bundle, counted as a hit or a miss."""
        found = self._entries.get(key)
        if found is None:
            self._misses += 1
            return None
        self._hits += 1
        return found

    def put(self, key: Key, bundle: PreparedBundle, generation: int) -> None:
        """Stores bundle unless what it was built from was invalidated since generation."""
        if self._cleared_at > generation:
            return
        inputs = [f"id:{key[1]}", *(f"name:{name}" for name in bundle.included_configs)]
        if any(self._invalidated.get(i, 0) > generation for i in inputs):
            return
        self._evictions += self._entries.put(key, bundle)

    def _drop(self, keys: list[Key]) -> None:
        for key in keys:
            self._entries.pop(key)
        self._evictions += len(keys)

    def evict_config(self, config_id: str, name: str, *, created: bool = False) -> None:
        """A config changed: drop its revisions (unless it is new) and every includer of name."""
        self.generation += 1
        if len(self._invalidated) >= _MAX_REMEMBERED:
            self._invalidated.clear()
            self._cleared_at = self.generation
        self._invalidated[f"name:{name}"] = self.generation
        if not created:
            self._invalidated[f"id:{config_id}"] = self.generation
        self._drop(
            [
                key
                for key, bundle in self._entries.items()
                if (key[1] == config_id and not created) or name in bundle.included_configs
            ]
        )

    def clear(self) -> None:
        """Drops everything (the change stream could not be resumed)."""
        self.generation += 1
        self._cleared_at = self.generation
        self._drop([key for key, _ in self._entries.items()])

    def stats(self) -> CacheStats:
        """Current counters."""
        return CacheStats(self._hits, self._misses, self._evictions, len(self._entries))
