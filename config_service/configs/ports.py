"""What ConfigService's use cases need from storage: repository Protocols and a unit of work.

The use cases depend on these Protocols only. `config_service/storage` implements them over
SQLAlchemy; `tests/unit` implements them in memory. Repositories never commit: the unit of
work does, once. Leaving its `async with` block without committing discards every write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from config_service.configs.model import ChangeType, Config, ConfigChange
from shared.idempotency import IdempotencyRepo
from shared.listing import Condition
from shared.transaction import Transaction
from shared.visibility import Viewer


class ConfigRepo(Protocol):
    """A tenant's configs (current state, live or deleted) and their immutable revisions."""

    async def lock_tenant(self, tenant_id: str, scope: str) -> None:
        """Waits for, then holds until the unit of work ends, the (scope, tenant) lock."""

    async def get(
        self, tenant_id: str, config_id: str, *, for_update: bool = False
    ) -> Config | None:
        """The config's current state, deleted or not; for_update locks it."""

    async def get_revision(self, tenant_id: str, config_id: str, revision: int) -> Config | None:
        """The config as it was at revision."""

    async def get_revisions(
        self, tenant_id: str, wanted: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], Config]:
        """The configs as they were at these (config_id, revision) pairs."""

    async def live_name_owner(self, tenant_id: str, name: str) -> str | None:
        """The id of the live config with that name, if any."""

    async def insert(self, tenant_id: str, config: Config) -> None:
        """Stores a new config and its first revision (AlreadyExists on a taken id or name)."""

    async def insert_many(self, tenant_id: str, configs: Sequence[Config]) -> None:
        """Stores new configs and their first revisions."""

    async def save_revision(self, tenant_id: str, config: Config) -> None:
        """Makes config the current state and records it as a new revision."""

    async def mark_deleted(self, tenant_id: str, config_id: str, when: datetime) -> None:
        """Hides the config from reads of the latest state; its revisions stay."""

    async def mark_deleted_many(
        self, tenant_id: str, config_ids: Sequence[str], when: datetime
    ) -> None:
        """Hides these configs from reads of the latest state; their revisions stay."""

    async def live_in_namespace(
        self, tenant_id: str, namespace: str, *, for_update: bool = False
    ) -> list[Config]:
        """Every live config imported into package namespace, by path."""

    async def live_by_names(self, tenant_id: str, names: Sequence[str]) -> list[Config]:
        """The live configs with any of these names."""

    async def existing_names(
        self, tenant_id: str, names: Sequence[str], *, outside_namespace: str = ""
    ) -> set[str]:
        """Which of names a live config holds (outside that package namespace, when given)."""

    async def existing_source_paths(
        self,
        tenant_id: str,
        wanted: Sequence[tuple[str, str]],
        *,
        outside_namespace: str = "",
    ) -> set[tuple[str, str]]:
        """Which (source key, path) pairs a live imported config holds."""

    async def namespaces_of_source(self, tenant_id: str, source_key: str) -> set[str]:
        """The package namespaces whose live files were imported from source_key."""

    async def namespace_is_imported(self, tenant_id: str, namespace: str) -> bool:
        """True when a live config was imported into package namespace."""

    async def list_live(
        self,
        tenant_id: str,
        conditions: Sequence[Condition],
        after_id: str | None,
        limit: int,
        *,
        viewer: Viewer | None = None,
    ) -> list[Config]:
        """Live configs matching conditions (and visible to viewer, when given), by id,
        after after_id."""

    async def count_live(
        self, tenant_id: str, conditions: Sequence[Condition], *, viewer: Viewer | None = None
    ) -> int:
        """How many live configs match conditions (and are visible to viewer, when given)."""

    async def visible_ids(
        self, tenant_id: str, config_ids: Sequence[str], viewer: Viewer
    ) -> set[str]:
        """Which of config_ids (live or deleted) viewer may see."""

    async def list_revisions(
        self, tenant_id: str, config_id: str, before: int | None, limit: int
    ) -> list[Config]:
        """Revisions newest first, below before."""


class ChangeLogRepo(Protocol):
    """The gap-free change log behind WatchConfigs: a global and a per-tenant sequence.

    Appends also announce themselves to other replicas when the unit of work commits.
    """

    async def append(
        self, tenant_id: str, change_type: ChangeType, config: Config, when: datetime
    ) -> int:
        """Appends a change and returns its global sequence."""

    async def append_many(
        self, tenant_id: str, changes: Sequence[tuple[ChangeType, Config]], when: datetime
    ) -> int:
        """Appends changes in order; returns the last global sequence."""

    async def prune(self, keep: int) -> None:
        """Drops all but the newest keep changes, and never a tenant's newest one."""

    async def bounds(self, tenant_id: str | None) -> tuple[int, int]:
        """(oldest retained, latest) sequence of the tenant's (None: every) changes; or (0, 0)."""

    async def after(self, tenant_id: str | None, sequence: int, limit: int) -> list[ConfigChange]:
        """The tenant's changes after sequence, oldest first (None: every tenant's)."""


class ConfigUoW(Transaction, Protocol):
    """One ConfigService transaction and the repositories that work inside it."""

    @property
    def configs(self) -> ConfigRepo:
        """Configs and revisions."""

    @property
    def changes(self) -> ChangeLogRepo:
        """The change log."""

    @property
    def idempotency(self) -> IdempotencyRepo:
        """Stored first responses."""


class ConfigUoWFactory(Protocol):
    """Opens a unit of work; one that will write says so up front."""

    def __call__(self, write: bool = False) -> ConfigUoW:
        """A new, not yet entered unit of work."""
