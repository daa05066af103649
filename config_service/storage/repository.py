"""Repositories over ConfigService's tables. They flush, never commit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, not_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from config_service.configs.model import ChangeType, Config, ConfigChange
from config_service.storage.models import ConfigChangeRow, ConfigRevisionRow, ConfigRow
from shared.bundle.validate import BundleSummary
from shared.errors import AlreadyExists
from shared.listing import Condition, like_pattern

# Any fixed 63-bit number; it names the lock that orders change-log appends on PostgreSQL.
_CHANGE_LOG_LOCK = 0x7A6D_C0DE_0001
NOTIFY_CHANNEL = "tandem_config_changes"


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
    )


class ConfigRepository:
    """Configs and their revisions."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

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
        self._session.add(self._row(tenant_id, config))
        self._session.add(self._revision_row(tenant_id, config))
        await self._flush_unique(config)

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

    async def list_live(
        self, tenant_id: str, conditions: Sequence[Condition], after_id: str | None, limit: int
    ) -> list[Config]:
        """Live configs matching conditions, ordered by id, after after_id."""
        query = (
            select(ConfigRow)
            .where(*self._live(tenant_id, conditions))
            .order_by(ConfigRow.config_id)
            .limit(limit)
        )
        if after_id is not None:
            query = query.where(ConfigRow.config_id > after_id)
        rows = (await self._session.scalars(query)).all()
        return [_config(row, row.update_time) for row in rows]

    async def count_live(self, tenant_id: str, conditions: Sequence[Condition]) -> int:
        """How many live configs match conditions."""
        query = (
            select(func.count()).select_from(ConfigRow).where(*self._live(tenant_id, conditions))
        )
        return int(await self._session.scalar(query) or 0)

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

    def _live(self, tenant_id: str, conditions: Sequence[Condition]) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [
            ConfigRow.tenant_id == tenant_id,
            ConfigRow.delete_time.is_(None),
        ]
        for condition in conditions:
            if condition.field == "name":
                column: Any = ConfigRow.name
            elif condition.field == "bundle.name":
                column = ConfigRow.bundle_name
            else:
                column = ConfigRow.tags[condition.field.removeprefix("tags.")].as_string()
            if condition.is_pattern:
                clause: ColumnElement[bool] = column.like(
                    like_pattern(condition.value), escape="\\"
                )
            else:
                clause = column == condition.value
            if condition.op == "!=":
                # A missing tag is "not equal" to any value.
                clause = not_(clause) | column.is_(None)
            clauses.append(clause)
        return clauses

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
            create_time=config.create_time,
            revision_time=config.update_time,
        )

    async def _flush_unique(self, config: Config) -> None:
        try:
            await self._session.flush()
        except IntegrityError as exc:
            # A concurrent writer took the id or the name between our check and our insert.
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
        if self._postgres:
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_LOG_LOCK}
            )
        latest = await self._session.scalar(select(func.max(ConfigChangeRow.sequence)))
        sequence = int(latest or 0) + 1
        tenant_latest = await self._session.scalar(
            select(func.max(ConfigChangeRow.tenant_sequence)).where(
                ConfigChangeRow.tenant_id == tenant_id
            )
        )
        self._session.add(
            ConfigChangeRow(
                sequence=sequence,
                tenant_id=tenant_id,
                tenant_sequence=int(tenant_latest or 0) + 1,
                config_id=config.config_id,
                change_type=change_type.value,
                revision=config.revision,
                etag=config.etag,
                name=config.name,
                change_time=when,
            )
        )
        await self._session.flush()
        if self._postgres:
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
