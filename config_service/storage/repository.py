"""Repositories over ConfigService's tables. They flush, never commit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, not_, select, text, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from config_service.configs.model import ChangeType, Config, ConfigChange, ConfigKind
from config_service.storage.models import ConfigChangeRow, ConfigRevisionRow, ConfigRow
from shared.bundle.references import canonical_source
from shared.bundle.validate import BundleSummary
from shared.db.tenant_lock import lock_tenant
from shared.errors import AlreadyExists
from shared.listing import Condition, like_pattern
from shared.visibility import Viewer, visibility_named

# Any fixed 63-bit number; it names the lock that orders change-log appends on PostgreSQL.
_CHANGE_LOG_LOCK = 0x7A6D_C0DE_0001
NOTIFY_CHANNEL = "tandem_config_changes"
# Values bound in one IN (...) list: far below SQLite's and PostgreSQL's parameter caps.
_IN_CHUNK = 500


def summary_to_json(summary: BundleSummary) -> dict[str, Any]:
    """The summary as stored."""
    fields = dataclasses.asdict(summary)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def summary_from_json(data: dict[str, Any]) -> BundleSummary:
    """The summary as read back; unknown keys from newer writers are ignored."""
    known = {f.name: f for f in dataclasses.fields(BundleSummary)}
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known
    }
    return BundleSummary(**values)


def _config(row: ConfigRow | ConfigRevisionRow, update_time: datetime) -> Config:
    return Config(
        config_id=row.config_id,
        name=row.name,
        description=row.description,
        yaml_content=row.yaml_content,
        tags=dict(row.tags),
        revision=row.revision,
        etag=row.etag,
        create_time=row.create_time,
        update_time=update_time,
        summary=summary_from_json(row.summary),
        delete_time=row.delete_time if isinstance(row, ConfigRow) else None,
        kind=ConfigKind(row.kind),
        namespace=row.namespace,
        path=row.path,
        source_uri=row.source_uri,
        owner=row.owner,
        visibility=visibility_named(row.visibility),
        team=row.team,
    )


def _visible(viewer: Viewer) -> ColumnElement[bool]:
    """The visibility rule over the configs table: every listing filters by it here."""
    return viewer.condition(ConfigRow.owner, ConfigRow.visibility, ConfigRow.team)


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[start : start + _IN_CHUNK] for start in range(0, len(items), _IN_CHUNK)]


# Filter fields that compare one column as written.
_COLUMNS: dict[str, Any] = {
    "name": ConfigRow.name,
    "bundle.name": ConfigRow.bundle_name,
    "namespace": ConfigRow.namespace,
    "kind": ConfigRow.kind,
    "path": ConfigRow.path,
}


class ConfigRepository:
    """Configs and their revisions."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_tenant(self, tenant_id: str, scope: str) -> None:
        """Waits for, then holds until the transaction ends, the (scope, tenant) lock."""
        await lock_tenant(self._session, scope, tenant_id)

    async def get(
        self, tenant_id: str, config_id: str, *, for_update: bool = False
    ) -> Config | None:
        """The config's current state, deleted or not; for_update locks its row."""
        query = select(ConfigRow).where(
            ConfigRow.tenant_id == tenant_id, ConfigRow.config_id == config_id
        )
        if for_update:
            query = query.with_for_update()
        row = await self._session.scalar(query)
        return None if row is None else _config(row, row.update_time)

    async def get_revision(self, tenant_id: str, config_id: str, revision: int) -> Config | None:
        """The config as it was at revision."""
        row = await self._session.get(ConfigRevisionRow, (tenant_id, config_id, revision))
        return None if row is None else _config(row, row.revision_time)

    async def get_revisions(
        self, tenant_id: str, wanted: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], Config]:
        """The configs as they were at these (config_id, revision) pairs."""
        found: dict[tuple[str, int], Config] = {}
        for chunk in _chunks(sorted(set(wanted))):
            rows = await self._session.scalars(
                select(ConfigRevisionRow).where(
                    ConfigRevisionRow.tenant_id == tenant_id,
                    tuple_(ConfigRevisionRow.config_id, ConfigRevisionRow.revision).in_(chunk),
                )
            )
            for row in rows:
                found[(row.config_id, row.revision)] = _config(row, row.revision_time)
        return found

    async def live_name_owner(self, tenant_id: str, name: str) -> str | None:
        """The id of the live config with that name, if any."""
        return await self._session.scalar(
            select(ConfigRow.config_id).where(
                ConfigRow.tenant_id == tenant_id,
                ConfigRow.name == name,
                ConfigRow.delete_time.is_(None),
            )
        )

    async def insert(self, tenant_id: str, config: Config) -> None:
        """Stores a new config and its first revision."""
        await self.insert_many(tenant_id, [config])

    async def insert_many(self, tenant_id: str, configs: Sequence[Config]) -> None:
        """Stores new configs and their first revisions, in one flush."""
        for config in configs:
            self._session.add(self._row(tenant_id, config))
            self._session.add(self._revision_row(tenant_id, config))
        if configs:
            await self._flush_unique(configs[0] if len(configs) == 1 else None)

    async def save_revision(self, tenant_id: str, config: Config) -> None:
        """Makes config the current state and records it as a new revision."""
        row = await self._session.get(ConfigRow, (tenant_id, config.config_id))
        assert row is not None, "save_revision needs an existing config"
        row.name = config.name
        row.description = config.description
        row.tags = dict(config.tags)
        row.revision = config.revision
        row.etag = config.etag
        row.yaml_content = config.yaml_content
        row.summary = summary_to_json(config.summary)
        row.bundle_name = config.summary.name
        row.kind = config.kind.value
        row.namespace = config.namespace
        row.path = config.path
        row.source_uri = config.source_uri
        row.source_key = canonical_source(config.source_uri)
        row.owner = config.owner
        row.visibility = config.visibility.value
        row.team = config.team
        row.update_time = config.update_time
        self._session.add(self._revision_row(tenant_id, config))
        await self._flush_unique(config)

    async def mark_deleted(self, tenant_id: str, config_id: str, when: datetime) -> None:
        """Hides the config from reads of the latest state; its revisions stay."""
        row = await self._session.get(ConfigRow, (tenant_id, config_id))
        assert row is not None
        row.delete_time = when
        row.update_time = when
        await self._session.flush()

    async def live_in_namespace(
        self, tenant_id: str, namespace: str, *, for_update: bool = False
    ) -> list[Config]:
        """Every live config imported into package namespace, by path; for_update locks them."""
        query = (
            select(ConfigRow)
            .where(
                ConfigRow.tenant_id == tenant_id,
                ConfigRow.namespace == namespace,
                ConfigRow.delete_time.is_(None),
            )
            .order_by(ConfigRow.path)
        )
        if for_update:
            query = query.with_for_update()
        rows = (await self._session.scalars(query)).all()
        return [_config(row, row.update_time) for row in rows]

    async def live_by_names(self, tenant_id: str, names: Sequence[str]) -> list[Config]:
        """The live configs with any of these names."""
        found: list[Config] = []
        for chunk in _chunks(sorted(set(names))):
            rows = await self._session.scalars(
                select(ConfigRow).where(
                    ConfigRow.tenant_id == tenant_id,
                    ConfigRow.name.in_(chunk),
                    ConfigRow.delete_time.is_(None),
                )
            )
            found.extend(_config(row, row.update_time) for row in rows)
        return found

    async def existing_names(
        self, tenant_id: str, names: Sequence[str], *, outside_namespace: str = ""
    ) -> set[str]:
        """Which of names a live config holds (outside that package namespace, when given)."""
        found: set[str] = set()
        for chunk in _chunks(sorted(set(names))):
            query = select(ConfigRow.name).where(
                ConfigRow.tenant_id == tenant_id,
                ConfigRow.name.in_(chunk),
                ConfigRow.delete_time.is_(None),
            )
            if outside_namespace:
                query = query.where(ConfigRow.namespace != outside_namespace)
            found.update(await self._session.scalars(query))
        return found

    async def existing_source_paths(
        self,
        tenant_id: str,
        wanted: Sequence[tuple[str, str]],
        *,
        outside_namespace: str = "",
    ) -> set[tuple[str, str]]:
        """Which (source key, path) pairs a live imported config holds (outside that package
        namespace, when given)."""
        found: set[tuple[str, str]] = set()
        for chunk in _chunks(sorted(set(wanted))):
            query = select(ConfigRow.source_key, ConfigRow.path).where(
                ConfigRow.tenant_id == tenant_id,
                tuple_(ConfigRow.source_key, ConfigRow.path).in_(chunk),
                ConfigRow.delete_time.is_(None),
            )
            if outside_namespace:
                query = query.where(ConfigRow.namespace != outside_namespace)
            found.update((key, path) for key, path in (await self._session.execute(query)).all())
        return found

    async def namespaces_of_source(self, tenant_id: str, source_key: str) -> set[str]:
        """The package namespaces whose live files were imported from source_key."""
        rows = await self._session.scalars(
            select(ConfigRow.namespace)
            .where(
                ConfigRow.tenant_id == tenant_id,
                ConfigRow.source_key == source_key,
                ConfigRow.namespace != "",
                ConfigRow.delete_time.is_(None),
            )
            .distinct()
        )
        return set(rows)

    async def namespace_is_imported(self, tenant_id: str, namespace: str) -> bool:
        """True when a live config was imported into package namespace."""
        found = await self._session.scalar(
            select(ConfigRow.config_id)
            .where(
                ConfigRow.tenant_id == tenant_id,
                ConfigRow.namespace == namespace,
                ConfigRow.delete_time.is_(None),
            )
            .limit(1)
        )
        return found is not None

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
        query = (
            select(ConfigRow)
            .where(*self._live(tenant_id, conditions, viewer))
            .order_by(ConfigRow.config_id)
            .limit(limit)
        )
        if after_id is not None:
            query = query.where(ConfigRow.config_id > after_id)
        rows = (await self._session.scalars(query)).all()
        return [_config(row, row.update_time) for row in rows]

    async def count_live(
        self, tenant_id: str, conditions: Sequence[Condition], *, viewer: Viewer | None = None
    ) -> int:
        """How many live configs match conditions (and are visible to viewer, when given)."""
        query = (
            select(func.count())
            .select_from(ConfigRow)
            .where(*self._live(tenant_id, conditions, viewer))
        )
        return int(await self._session.scalar(query) or 0)

    async def visible_ids(
        self, tenant_id: str, config_ids: Sequence[str], viewer: Viewer
    ) -> set[str]:
        """Which of config_ids (live or deleted) viewer may see."""
        found: set[str] = set()
        for chunk in _chunks(sorted(set(config_ids))):
            rows = await self._session.scalars(
                select(ConfigRow.config_id).where(
                    ConfigRow.tenant_id == tenant_id,
                    ConfigRow.config_id.in_(chunk),
                    _visible(viewer),
                )
            )
            found.update(rows)
        return found

    async def list_revisions(
        self, tenant_id: str, config_id: str, before: int | None, limit: int
    ) -> list[Config]:
        """Revisions newest first, below before."""
        query = (
            select(ConfigRevisionRow)
            .where(
                ConfigRevisionRow.tenant_id == tenant_id,
                ConfigRevisionRow.config_id == config_id,
            )
            .order_by(ConfigRevisionRow.revision.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(ConfigRevisionRow.revision < before)
        rows = (await self._session.scalars(query)).all()
        return [_config(row, row.revision_time) for row in rows]

    def _live(
        self, tenant_id: str, conditions: Sequence[Condition], viewer: Viewer | None = None
    ) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [
            ConfigRow.tenant_id == tenant_id,
            ConfigRow.delete_time.is_(None),
        ]
        if viewer is not None:
            clauses.append(_visible(viewer))
        for condition in conditions:
            value = condition.value
            if condition.field in _COLUMNS:
                column: Any = _COLUMNS[condition.field]
            elif condition.field == "source_uri":
                # `@REF` is recorded, not matched: an exact value compares as references do.
                column = ConfigRow.source_uri if condition.is_pattern else ConfigRow.source_key
                value = value if condition.is_pattern else canonical_source(value)
            else:
                column = ConfigRow.tags[condition.field.removeprefix("tags.")].as_string()
            if condition.is_pattern:
                clause: ColumnElement[bool] = column.like(like_pattern(value), escape="\\")
            else:
                clause = column == value
            if condition.op == "!=":
                # A missing tag is "not equal" to any value.
                clause = not_(clause) | column.is_(None)
            clauses.append(clause)
        return clauses

    async def mark_deleted_many(
        self, tenant_id: str, config_ids: Sequence[str], when: datetime
    ) -> None:
        """Hides these configs from reads of the latest state; their revisions stay."""
        for config_id in config_ids:
            row = await self._session.get(ConfigRow, (tenant_id, config_id))
            assert row is not None
            row.delete_time = when
            row.update_time = when
        await self._session.flush()

    @staticmethod
    def _row(tenant_id: str, config: Config) -> ConfigRow:
        return ConfigRow(
            tenant_id=tenant_id,
            config_id=config.config_id,
            name=config.name,
            description=config.description,
            tags=dict(config.tags),
            revision=config.revision,
            etag=config.etag,
            yaml_content=config.yaml_content,
            summary=summary_to_json(config.summary),
            bundle_name=config.summary.name,
            kind=config.kind.value,
            namespace=config.namespace,
            path=config.path,
            source_uri=config.source_uri,
            source_key=canonical_source(config.source_uri),
            owner=config.owner,
            visibility=config.visibility.value,
            team=config.team,
            create_time=config.create_time,
            update_time=config.update_time,
            delete_time=None,
        )

    @staticmethod
    def _revision_row(tenant_id: str, config: Config) -> ConfigRevisionRow:
        return ConfigRevisionRow(
            tenant_id=tenant_id,
            config_id=config.config_id,
            revision=config.revision,
            name=config.name,
            description=config.description,
            tags=dict(config.tags),
            etag=config.etag,
            yaml_content=config.yaml_content,
            summary=summary_to_json(config.summary),
            kind=config.kind.value,
            namespace=config.namespace,
            path=config.path,
            source_uri=config.source_uri,
            owner=config.owner,
            visibility=config.visibility.value,
            team=config.team,
            create_time=config.create_time,
            revision_time=config.update_time,
        )

    async def _flush_unique(self, config: Config | None) -> None:
        try:
            await self._session.flush()
        except IntegrityError as exc:
            # A concurrent writer took the id or the name between our check and our insert.
            if config is None:
                raise AlreadyExists(
                    "A config with one of these ids or names exists already.",
                    reason="CONFIG_ALREADY_EXISTS",
                    resource_type="Config",
                ) from exc
            raise AlreadyExists(
                f"A config with id {config.config_id!r} or name {config.name!r} exists already.",
                reason="CONFIG_ALREADY_EXISTS",
                resource_type="Config",
                resource_name=config.config_id,
            ) from exc


class ChangeLog:
    """The gap-free change log behind WatchConfigs: global, and per tenant.

    Methods that take a tenant speak in that tenant's own sequence; None means every
    tenant's changes in the global sequence (the service identity's view).
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._postgres = session.get_bind().dialect.name == "postgresql"

    async def append(
        self, tenant_id: str, change_type: ChangeType, config: Config, when: datetime
    ) -> int:
        """Appends a change in the current transaction and returns its sequence.

        Appends are serialized until commit (an advisory lock on PostgreSQL, the write lock
        on SQLite), so sequences are assigned in commit order and a rolled-back write leaves
        no gap that a watcher could skip past.
        """
        return await self.append_many(tenant_id, [(change_type, config)], when)

    async def append_many(
        self,
        tenant_id: str,
        changes: Sequence[tuple[ChangeType, Config]],
        when: datetime,
    ) -> int:
        """Appends changes in order, in the current transaction; returns the last sequence.

        Serialized as `append` is; one bundle import appends all of its files' changes here.
        """
        if self._postgres:
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_LOG_LOCK}
            )
        latest = await self._session.scalar(select(func.max(ConfigChangeRow.sequence)))
        tenant_latest = await self._session.scalar(
            select(func.max(ConfigChangeRow.tenant_sequence)).where(
                ConfigChangeRow.tenant_id == tenant_id
            )
        )
        sequence = int(latest or 0)
        tenant_sequence = int(tenant_latest or 0)
        for change_type, config in changes:
            sequence += 1
            tenant_sequence += 1
            self._session.add(
                ConfigChangeRow(
                    sequence=sequence,
                    tenant_id=tenant_id,
                    tenant_sequence=tenant_sequence,
                    config_id=config.config_id,
                    change_type=change_type.value,
                    revision=config.revision,
                    etag=config.etag,
                    name=config.name,
                    change_time=when,
                )
            )
        await self._session.flush()
        if self._postgres and changes:
            # Delivered at commit, to every replica's listener; ids only.
            await self._session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": NOTIFY_CHANNEL, "payload": str(sequence)},
            )
        return sequence

    async def prune(self, keep: int) -> None:
        """Drops all but the newest keep changes, and never a tenant's newest one.

        A tenant's newest change is what tells its watchers how far its sequence has got.
        """
        latest = await self._session.scalar(select(func.max(ConfigChangeRow.sequence)))
        if latest is None or latest <= keep:
            return
        newest_per_tenant = select(func.max(ConfigChangeRow.sequence)).group_by(
            ConfigChangeRow.tenant_id
        )
        await self._session.execute(
            delete(ConfigChangeRow).where(
                ConfigChangeRow.sequence <= latest - keep,
                ConfigChangeRow.sequence.not_in(newest_per_tenant.scalar_subquery()),
            )
        )

    @staticmethod
    def _position(tenant_id: str | None) -> Any:
        return ConfigChangeRow.sequence if tenant_id is None else ConfigChangeRow.tenant_sequence

    async def bounds(self, tenant_id: str | None) -> tuple[int, int]:
        """(oldest retained, latest) sequence of the tenant's (None: every) changes; or (0, 0)."""
        position = self._position(tenant_id)
        query = select(func.min(position), func.max(position))
        if tenant_id is not None:
            query = query.where(ConfigChangeRow.tenant_id == tenant_id)
        oldest, latest = (await self._session.execute(query)).one()
        return int(oldest or 0), int(latest or 0)

    async def after(self, tenant_id: str | None, sequence: int, limit: int) -> list[ConfigChange]:
        """The tenant's changes after sequence, oldest first (None: every tenant's)."""
        position = self._position(tenant_id)
        conditions = [position > sequence]
        if tenant_id is not None:
            conditions.append(ConfigChangeRow.tenant_id == tenant_id)
        rows = (
            await self._session.scalars(
                select(ConfigChangeRow).where(and_(*conditions)).order_by(position).limit(limit)
            )
        ).all()
        return [
            ConfigChange(
                sequence=row.sequence if tenant_id is None else row.tenant_sequence,
                type=ChangeType(row.change_type),
                config_id=row.config_id,
                revision=row.revision,
                etag=row.etag,
                name=row.name,
                change_time=row.change_time,
            )
            for row in rows
        ]
