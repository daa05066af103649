"""An in-memory ConfigService unit of work, for unit tests of the use cases without I/O.

It keeps the rules the SQL storage keeps and the use cases rely on: ids are unique per
tenant (a deleted config's id stays taken), live names are unique per tenant, revisions are
immutable, a request_id holds one fingerprint, change-log sequences are gap-free (global and
per tenant), and nothing written is visible to others until `commit()`. Writers run one at
a time, as on SQLite; a read unit may not write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from config_service.configs.model import ChangeType, Config, ConfigChange
from config_service.configs.ports import ChangeLogRepo, ConfigRepo
from shared.bundle.references import canonical_source
from shared.errors import AlreadyExists
from shared.idempotency import IdempotencyRepo
from shared.listing import Condition
from shared.visibility import Viewer
from tests.unit.fake_storage import FakeDatabase, FakeIdempotency, FakeUnit, Keys, holds


@dataclasses.dataclass(frozen=True)
class StoredChange:
    """One row of the change log."""

    sequence: int
    tenant_id: str
    tenant_sequence: int
    config_id: str
    change_type: ChangeType
    revision: int
    etag: str
    name: str
    change_time: datetime


@dataclasses.dataclass
class State:
    """Everything stored, as one committed snapshot."""

    configs: dict[tuple[str, str], Config] = dataclasses.field(default_factory=dict)
    revisions: dict[tuple[str, str, int], Config] = dataclasses.field(default_factory=dict)
    changes: list[StoredChange] = dataclasses.field(default_factory=list)
    keys: Keys = dataclasses.field(default_factory=dict)

    def copy(self) -> State:
        """A working copy; values are frozen, so copying the containers is enough."""
        return State(dict(self.configs), dict(self.revisions), list(self.changes), dict(self.keys))


class FakeConfigDatabase(FakeDatabase[State]):
    """The committed state, shared by every unit of work opened on it."""

    def __init__(self) -> None:
        super().__init__(State())

    def unit_of_work(self, write: bool = False) -> FakeConfigUnitOfWork:
        """A ConfigUoWFactory over this database."""
        return FakeConfigUnitOfWork(self, write=write)


def _stored(config: Config) -> Config:
    # Findings are never stored; tags are copied so a caller's dict cannot change them.
    return dataclasses.replace(config, tags=dict(config.tags), warnings=())


def _taken(config: Config) -> AlreadyExists:
    return AlreadyExists(
        f"A config with id {config.config_id!r} or name {config.name!r} exists already.",
        reason="CONFIG_ALREADY_EXISTS",
        resource_type="Config",
        resource_name=config.config_id,
    )


def _column(config: Config, field: str) -> str | None:
    if field == "name":
        return config.name
    if field == "bundle.name":
        return config.summary.name
    if field == "namespace":
        return config.namespace
    if field == "kind":
        return config.kind.value
    if field == "path":
        return config.path
    if field == "source_uri":
        return config.source_uri
    return config.tags.get(field.removeprefix("tags."))


def _matches(config: Config, condition: Condition) -> bool:
    value = condition.value
    column = _column(config, condition.field)
    if condition.field == "source_uri" and not condition.is_pattern:
        column = canonical_source(config.source_uri)
        value = canonical_source(value)
    return holds(column, value, condition)


class FakeConfigRepo:
    """Configs and revisions in a unit's working copy."""

    def __init__(self, unit: FakeConfigUnitOfWork) -> None:
        self._unit = unit

    @property
    def _state(self) -> State:
        return self._unit.work

    def _live(self, tenant_id: str) -> list[Config]:
        return [
            c
            for (tenant, _), c in self._state.configs.items()
            if tenant == tenant_id and c.delete_time is None
        ]

    async def lock_tenant(self, tenant_id: str, scope: str) -> None:
        self._unit.database.locks.append((tenant_id, scope))

    async def get(
        self, tenant_id: str, config_id: str, *, for_update: bool = False
    ) -> Config | None:
        return self._state.configs.get((tenant_id, config_id))

    async def get_revision(self, tenant_id: str, config_id: str, revision: int) -> Config | None:
        return self._state.revisions.get((tenant_id, config_id, revision))

    async def get_revisions(
        self, tenant_id: str, wanted: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], Config]:
        found: dict[tuple[str, int], Config] = {}
        for config_id, revision in wanted:
            config = self._state.revisions.get((tenant_id, config_id, revision))
            if config is not None:
                found[(config_id, revision)] = config
        return found

    async def live_name_owner(self, tenant_id: str, name: str) -> str | None:
        return next((c.config_id for c in self._live(tenant_id) if c.name == name), None)

    async def insert(self, tenant_id: str, config: Config) -> None:
        await self.insert_many(tenant_id, [config])

    async def insert_many(self, tenant_id: str, configs: Sequence[Config]) -> None:
        self._unit.writing()
        names = {c.name for c in self._live(tenant_id)}
        for config in configs:
            key = (tenant_id, config.config_id)
            if key in self._state.configs or config.name in names:
                raise _taken(config)
            self._add_revision(tenant_id, config)
            self._state.configs[key] = _stored(config)
            names.add(config.name)

    async def save_revision(self, tenant_id: str, config: Config) -> None:
        self._unit.writing()
        current = self._state.configs.get((tenant_id, config.config_id))
        assert current is not None, "save_revision needs an existing config"
        renamed = current.delete_time is None and config.name != current.name
        if renamed and config.name in {c.name for c in self._live(tenant_id)}:
            raise _taken(config)
        self._add_revision(tenant_id, config)
        self._state.configs[(tenant_id, config.config_id)] = dataclasses.replace(
            _stored(config), create_time=current.create_time, delete_time=current.delete_time
        )

    def _add_revision(self, tenant_id: str, config: Config) -> None:
        key = (tenant_id, config.config_id, config.revision)
        if key in self._state.revisions:
            raise AssertionError(f"revision {key} exists already: revisions are immutable")
        self._state.revisions[key] = dataclasses.replace(_stored(config), delete_time=None)

    async def mark_deleted(self, tenant_id: str, config_id: str, when: datetime) -> None:
        await self.mark_deleted_many(tenant_id, [config_id], when)

    async def mark_deleted_many(
        self, tenant_id: str, config_ids: Sequence[str], when: datetime
    ) -> None:
        self._unit.writing()
        for config_id in config_ids:
            current = self._state.configs.get((tenant_id, config_id))
            assert current is not None
            self._state.configs[(tenant_id, config_id)] = dataclasses.replace(
                current, delete_time=when, update_time=when
            )

    async def live_in_namespace(
        self, tenant_id: str, namespace: str, *, for_update: bool = False
    ) -> list[Config]:
        found = [c for c in self._live(tenant_id) if c.namespace == namespace]
        return sorted(found, key=lambda c: c.path)

    async def live_by_names(self, tenant_id: str, names: Sequence[str]) -> list[Config]:
        wanted = set(names)
        return [c for c in self._live(tenant_id) if c.name in wanted]

    async def existing_names(
        self, tenant_id: str, names: Sequence[str], *, outside_namespace: str = ""
    ) -> set[str]:
        return {
            c.name
            for c in self._live(tenant_id)
            if c.name in set(names) and not (outside_namespace and c.namespace == outside_namespace)
        }

    async def existing_source_paths(
        self,
        tenant_id: str,
        wanted: Sequence[tuple[str, str]],
        *,
        outside_namespace: str = "",
    ) -> set[tuple[str, str]]:
        held = {
            (canonical_source(c.source_uri), c.path)
            for c in self._live(tenant_id)
            if not (outside_namespace and c.namespace == outside_namespace)
        }
        return held & set(wanted)

    async def namespaces_of_source(self, tenant_id: str, source_key: str) -> set[str]:
        return {
            c.namespace
            for c in self._live(tenant_id)
            if c.namespace and canonical_source(c.source_uri) == source_key
        }

    async def namespace_is_imported(self, tenant_id: str, namespace: str) -> bool:
        return any(c.namespace == namespace for c in self._live(tenant_id))

    def _matching(
        self, tenant_id: str, conditions: Sequence[Condition], viewer: Viewer | None = None
    ) -> list[Config]:
        found = [
            c
            for c in self._live(tenant_id)
            if all(_matches(c, x) for x in conditions)
            and (viewer is None or viewer.may_see(c.owner, c.visibility, c.team))
        ]
        return sorted(found, key=lambda c: c.config_id)

    async def list_live(
        self,
        tenant_id: str,
        conditions: Sequence[Condition],
        after_id: str | None,
        limit: int,
        *,
        viewer: Viewer | None = None,
    ) -> list[Config]:
        found = self._matching(tenant_id, conditions, viewer)
        if after_id is not None:
            found = [c for c in found if c.config_id > after_id]
        return found[:limit]

    async def count_live(
        self, tenant_id: str, conditions: Sequence[Condition], *, viewer: Viewer | None = None
    ) -> int:
        return len(self._matching(tenant_id, conditions, viewer))

    async def visible_ids(
        self, tenant_id: str, config_ids: Sequence[str], viewer: Viewer
    ) -> set[str]:
        return {
            config_id
            for config_id in config_ids
            if (found := self._state.configs.get((tenant_id, config_id))) is not None
            and viewer.may_see(found.owner, found.visibility, found.team)
        }

    async def list_revisions(
        self, tenant_id: str, config_id: str, before: int | None, limit: int
    ) -> list[Config]:
        found = [
            c
            for (tenant, cid, revision), c in self._state.revisions.items()
            if tenant == tenant_id and cid == config_id and (before is None or revision < before)
        ]
        return sorted(found, key=lambda c: -c.revision)[:limit]


class FakeChangeLog:
    """The change log in a unit's working copy."""

    def __init__(self, unit: FakeConfigUnitOfWork) -> None:
        self._unit = unit

    @property
    def _rows(self) -> list[StoredChange]:
        return self._unit.work.changes

    async def append(
        self, tenant_id: str, change_type: ChangeType, config: Config, when: datetime
    ) -> int:
        return await self.append_many(tenant_id, [(change_type, config)], when)

    async def append_many(
        self, tenant_id: str, changes: Sequence[tuple[ChangeType, Config]], when: datetime
    ) -> int:
        self._unit.writing()
        sequence = max((r.sequence for r in self._rows), default=0)
        tenant_sequence = max(
            (r.tenant_sequence for r in self._rows if r.tenant_id == tenant_id), default=0
        )
        for change_type, config in changes:
            sequence += 1
            tenant_sequence += 1
            self._rows.append(
                StoredChange(
                    sequence,
                    tenant_id,
                    tenant_sequence,
                    config.config_id,
                    change_type,
                    config.revision,
                    config.etag,
                    config.name,
                    when,
                )
            )
        if changes:
            self._unit.announced.append(sequence)
        return sequence

    async def prune(self, keep: int) -> None:
        latest = max((r.sequence for r in self._rows), default=None)
        if latest is None or latest <= keep:
            return
        self._unit.writing()
        newest: dict[str, int] = {}
        for row in self._rows:
            newest[row.tenant_id] = max(newest.get(row.tenant_id, 0), row.sequence)
        kept = set(newest.values())
        self._rows[:] = [r for r in self._rows if r.sequence > latest - keep or r.sequence in kept]

    @staticmethod
    def _position(row: StoredChange, tenant_id: str | None) -> int:
        return row.sequence if tenant_id is None else row.tenant_sequence

    def _of(self, tenant_id: str | None) -> list[StoredChange]:
        return [r for r in self._rows if tenant_id is None or r.tenant_id == tenant_id]

    async def bounds(self, tenant_id: str | None) -> tuple[int, int]:
        positions = [self._position(r, tenant_id) for r in self._of(tenant_id)]
        return (min(positions), max(positions)) if positions else (0, 0)

    async def after(self, tenant_id: str | None, sequence: int, limit: int) -> list[ConfigChange]:
        rows = sorted(
            (r for r in self._of(tenant_id) if self._position(r, tenant_id) > sequence),
            key=lambda r: self._position(r, tenant_id),
        )[:limit]
        return [
            ConfigChange(
                sequence=self._position(r, tenant_id),
                type=r.change_type,
                config_id=r.config_id,
                revision=r.revision,
                etag=r.etag,
                name=r.name,
                change_time=r.change_time,
            )
            for r in rows
        ]


class FakeConfigUnitOfWork(FakeUnit[State]):
    """One ConfigService transaction over a working copy of the database's state."""

    def __init__(self, database: FakeConfigDatabase, *, write: bool = False) -> None:
        super().__init__(database, write=write)
        # Global sequences this unit's appends announce at commit (the NOTIFY payloads).
        self.announced: list[int] = []

    def _opened(self) -> None:
        self.announced = []

    @property
    def configs(self) -> ConfigRepo:
        """Configs and revisions."""
        _ = self.work
        return FakeConfigRepo(self)

    @property
    def changes(self) -> ChangeLogRepo:
        """The change log."""
        _ = self.work
        return FakeChangeLog(self)

    @property
    def idempotency(self) -> IdempotencyRepo:
        """Stored first responses."""
        _ = self.work
        return FakeIdempotency(self)
