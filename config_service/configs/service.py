"""ConfigService's use cases: every read and write of configs, revisions and changes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from config_service.configs.model import (
    OUTPUT_ONLY_PATHS,
    UPDATABLE_PATHS,
    ChangeType,
    Config,
    ConfigChange,
    ConfigFields,
    check_config_id,
    check_fields,
    make_etag,
)
from config_service.storage.uow import ConfigUnitOfWork
from shared.bundle.validate import Limits, ValidationResult, validate_document
from shared.cpu import CpuSlots
from shared.db.idempotency import check_request_id
from shared.db.notify import Broadcast
from shared.db.tenant_lock import lock_tenant
from shared.db.types import utcnow
from shared.errors import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PreconditionViolation,
    Unavailable,
)
from shared.listing import (
    Page,
    decode_page_token,
    page_of,
    page_scope,
    page_size,
    parse_filter,
)
from shared.quotas import PolicyLookup, check_count, unlimited

R = TypeVar("R")

FILTER_FIELDS = ("name", "bundle.name")
FILTER_PREFIXES = ("tags.",)
CREATE_METHOD = "CreateConfig"
WATCH_BATCH = 500


@dataclasses.dataclass(frozen=True)
class ConfigServiceOptions:
    """Tunables of the config domain."""

    limits: Limits = dataclasses.field(default_factory=Limits)
    # How many change-log entries WatchConfigs can resume from.
    change_retention: int = 10_000
    # Watchers re-read at least this often, in case a wake-up was lost.
    watch_poll_seconds: float = 5.0
    # Each tenant's quotas and literal-secret opt-in.
    policies: PolicyLookup = unlimited
    # Parses, validations and edits that run at once, off the event loop; more wait their turn.
    cpu_slots: int = 2


def _not_found(config_id: str, revision: int = 0) -> NotFound:
    what = f"Config {config_id!r}" + (f" revision {revision}" if revision else "")
    return NotFound(
        f"{what} does not exist.",
        reason="CONFIG_NOT_FOUND",
        resource_type="Config",
        resource_name=config_id if not revision else f"{config_id}@{revision}",
    )


def _check_etag(current: Config, etag: str) -> None:
    if etag and etag != current.etag:
        raise Aborted(
            f"Config {current.config_id!r} changed since it was read (now at revision "
            f"{current.revision}); read it again and retry with the new etag.",
            reason="ETAG_MISMATCH",
            metadata={"config_id": current.config_id, "current_revision": str(current.revision)},
            violations=[
                PreconditionViolation(
                    "ETAG_MISMATCH", f"configs/{current.config_id}", "etag is stale"
                )
            ],
        )


class ConfigService:
    """The config domain; the servicer translates to and from it."""

    def __init__(
        self,
        unit_of_work: Callable[..., ConfigUnitOfWork],
        changes: Broadcast,
        options: ConfigServiceOptions | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._changes = changes
        self._options = options or ConfigServiceOptions()
        self._cpu = CpuSlots(self._options.cpu_slots)

    # Validation -------------------------------------------------------------------------

    async def validate(self, tenant_id: str, yaml_content: str) -> ValidationResult:
        """Checks a document under the tenant's policy; writes nothing."""
        allow = self._options.policies(tenant_id).allow_literal_secrets
        return await self._cpu.run(
            validate_document, yaml_content, self._options.limits, allow_literal_secrets=allow
        )

    async def _require_valid(
        self, tenant_id: str, yaml_content: str, field_path: str
    ) -> ValidationResult:
        result = await self.validate(tenant_id, yaml_content)
        if not result.valid:
            raise InvalidArgument(
                f"The bundle document is invalid ({len(result.errors)} error(s)).",
                reason="INVALID_BUNDLE",
                violations=[
                    FieldViolation(
                        f"{field_path}.{v.field}" if v.field else field_path,
                        v.message,
                        line=v.line,
                        column=v.column,
                    )
                    for v in result.errors
                ],
            )
        return result

    # Reads ------------------------------------------------------------------------------

    async def get(self, tenant_id: str, config_id: str, revision: int = 0) -> Config:
        """The latest revision of a live config, or any revision of any config."""
        if revision < 0:
            raise InvalidArgument(
                "revision must not be negative.",
                violations=[FieldViolation("revision", "must be >= 0")],
            )
        async with self._unit_of_work() as uow:
            if revision:
                found = await uow.configs.get_revision(tenant_id, config_id, revision)
            else:
                found = await uow.configs.get(tenant_id, config_id)
                if found is not None and found.delete_time is not None:
                    found = None
        if found is None:
            raise _not_found(config_id, revision)
        return found

    async def list_configs(
        self, tenant_id: str, filter_text: str, requested_size: int, page_token: str
    ) -> Page[Config]:
        """One page of live configs matching the filter, ordered by id."""
        size = page_size(requested_size)
        conditions = parse_filter(filter_text, FILTER_FIELDS, FILTER_PREFIXES)
        scope = page_scope("configs", tenant_id, filter_text)
        after = decode_page_token(page_token, scope, shape=(str,))
        after_id = str(after[0]) if after else None
        async with self._unit_of_work() as uow:
            items = await uow.configs.list_live(tenant_id, conditions, after_id, size + 1)
            total = await uow.configs.count_live(tenant_id, conditions)
        return page_of(items, size, scope, lambda item: [item.config_id], total)

    async def list_revisions(
        self, tenant_id: str, config_id: str, requested_size: int, page_token: str
    ) -> Page[Config]:
        """A config's revisions, newest first; a deleted config's too."""
        size = page_size(requested_size)
        scope = page_scope("revisions", tenant_id, config_id)
        after = decode_page_token(page_token, scope, shape=(int,))
        async with self._unit_of_work() as uow:
            current = await uow.configs.get(tenant_id, config_id)
            if current is None:
                raise _not_found(config_id)
            before = int(after[0]) if after else None
            items = await uow.configs.list_revisions(tenant_id, config_id, before, size + 1)
        return page_of(items, size, scope, lambda item: [item.revision], current.revision)

    # Writes -----------------------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        fields: ConfigFields,
        *,
        config_id: str = "",
        request_id: str = "",
        request_fingerprint: str = "",
        validate_only: bool = False,
    ) -> Config:
        """Creates a config at revision 1."""
        if request_id:
            check_request_id(request_id)
        if config_id:
            check_config_id(config_id)
        if not fields.name:
            raise InvalidArgument(
                "config.name is required.",
                reason="NAME_REQUIRED",
                violations=[FieldViolation("config.name", "is required")],
            )
        check_fields(fields)
        content = fields.yaml_content or ""
        result = await self._require_valid(tenant_id, content, "config.yaml_content")
        now = utcnow()
        new_id = config_id or uuid.uuid4().hex
        config = Config(
            config_id=new_id,
            name=fields.name,
            description=fields.description or "",
            yaml_content=content,
            tags=dict(fields.tags or {}),
            revision=1,
            etag=make_etag(tenant_id, new_id, 1, content),
            create_time=now,
            update_time=now,
            summary=result.summary,
        )
        if validate_only:
            async with self._unit_of_work() as uow:
                await self._check_unique(uow, tenant_id, config)
            return dataclasses.replace(config, etag="")
        # A concurrent duplicate of this request_id loses the race on the idempotency key and
        # is retried once the winner has committed, so it finds and returns the first response.
        for attempt in range(3):
            try:
                return await self._create_once(tenant_id, config, request_id, request_fingerprint)
            except Aborted as exc:
                if exc.reason != "REQUEST_ID_CONFLICT" or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _create_once(
        self, tenant_id: str, config: Config, request_id: str, request_fingerprint: str
    ) -> Config:
        async with self._unit_of_work(write=True) as uow:
            if request_id:
                earlier = await uow.idempotency.find(
                    tenant_id, CREATE_METHOD, request_id, request_fingerprint
                )
                if earlier is not None:
                    first = json.loads(earlier.response)
                    replay = await uow.configs.get_revision(
                        tenant_id, first["config_id"], first["revision"]
                    )
                    assert replay is not None, "revisions are never deleted"
                    return replay
                # Claimed first: a concurrent duplicate waits on this key, not on the name.
                await uow.idempotency.record(
                    tenant_id,
                    CREATE_METHOD,
                    request_id,
                    request_fingerprint,
                    json.dumps({"config_id": config.config_id, "revision": 1}).encode(),
                )
            await self._check_unique(uow, tenant_id, config)
            await self._check_quota(uow, tenant_id)
            await uow.configs.insert(tenant_id, config)
            sequence = await uow.changes.append(
                tenant_id, ChangeType.CREATED, config, config.create_time
            )
            await self._prune(uow, sequence)
            await uow.commit()
        self._changes.notify()
        return config

    async def update(
        self,
        tenant_id: str,
        config_id: str,
        fields: ConfigFields,
        paths: list[str] | None,
        *,
        etag: str = "",
        validate_only: bool = False,
    ) -> Config:
        """Applies the fields named by paths (all given fields when None) as a new revision."""
        chosen = self._update_paths(fields, paths)
        check_fields(ConfigFields(**{path: getattr(fields, path) for path in chosen}))

        def apply(current: Config) -> Config:
            changes: dict[str, Any] = {}
            for path in chosen:
                value = getattr(fields, path)
                changes[path] = value if value is not None else ({} if path == "tags" else "")
            return dataclasses.replace(current, **changes)

        return await self._revise(tenant_id, config_id, etag, apply, validate_only=validate_only)

    async def edit(
        self, tenant_id: str, config_id: str, etag: str, transform: Callable[[str], str]
    ) -> Config:
        """Rewrites the document in place (add/remove a tool, provider or include)."""

        def apply(current: Config) -> Config:
            return dataclasses.replace(current, yaml_content=transform(current.yaml_content))

        return await self._revise(tenant_id, config_id, etag, apply)

    async def rollback(self, tenant_id: str, config_id: str, revision: int, etag: str) -> Config:
        """A new revision whose content equals an old one."""
        if revision <= 0:
            raise InvalidArgument(
                "revision must be a positive revision number.",
                violations=[FieldViolation("revision", "must be >= 1")],
            )
        async with self._unit_of_work() as uow:
            old = await uow.configs.get_revision(tenant_id, config_id, revision)
        if old is None:
            raise _not_found(config_id, revision)

        def apply(current: Config) -> Config:
            return dataclasses.replace(
                current,
                name=old.name,
                description=old.description,
                yaml_content=old.yaml_content,
                tags=old.tags,
            )

        return await self._revise(tenant_id, config_id, etag, apply, always=True)

    async def delete(self, tenant_id: str, config_id: str, etag: str) -> None:
        """Deletes a config; its revisions stay readable for sessions pinned to them."""
        async with self._unit_of_work(write=True) as uow:
            current = await uow.configs.get(tenant_id, config_id, for_update=True)
            if current is None or current.delete_time is not None:
                raise _not_found(config_id)
            _check_etag(current, etag)
            now = utcnow()
            await uow.configs.mark_deleted(tenant_id, config_id, now)
            sequence = await uow.changes.append(tenant_id, ChangeType.DELETED, current, now)
            await self._prune(uow, sequence)
            await uow.commit()
        self._changes.notify()

    async def _revise(
        self,
        tenant_id: str,
        config_id: str,
        etag: str,
        apply: Callable[[Config], Config],
        *,
        validate_only: bool = False,
        always: bool = False,
    ) -> Config:
        """The one write path for changes to an existing config."""
        async with self._unit_of_work(write=not validate_only) as uow:
            current = await uow.configs.get(tenant_id, config_id, for_update=not validate_only)
            if current is None or current.delete_time is not None:
                raise _not_found(config_id)
            _check_etag(current, etag)
            # An edit re-parses and re-dumps the whole document: seconds for a large one.
            proposed = await self._cpu.run(apply, current)
            if not always and _same_content(current, proposed):
                return current
            result = await self._require_valid(
                tenant_id, proposed.yaml_content, "config.yaml_content"
            )
            if proposed.name != current.name:
                await self._check_unique(uow, tenant_id, proposed, new=False)
            revision = current.revision + 1
            now = utcnow()
            revised = dataclasses.replace(
                proposed,
                revision=revision,
                etag=make_etag(tenant_id, config_id, revision, proposed.yaml_content),
                update_time=now,
                summary=result.summary,
            )
            if validate_only:
                return dataclasses.replace(revised, etag="")
            await uow.configs.save_revision(tenant_id, revised)
            sequence = await uow.changes.append(tenant_id, ChangeType.UPDATED, revised, now)
            await self._prune(uow, sequence)
            await uow.commit()
        self._changes.notify()
        return revised

    @staticmethod
    def _update_paths(fields: ConfigFields, paths: list[str] | None) -> list[str]:
        if paths is None:
            return [p for p in UPDATABLE_PATHS if getattr(fields, p)]
        if paths == ["*"]:
            return list(UPDATABLE_PATHS)
        violations = []
        for path in paths:
            if path in OUTPUT_ONLY_PATHS:
                violations.append(FieldViolation("update_mask", f"{path!r} is output only"))
            elif path not in UPDATABLE_PATHS:
                violations.append(FieldViolation("update_mask", f"unknown field {path!r}"))
        if violations:
            raise InvalidArgument(
                "update_mask names fields that cannot be updated.",
                reason="INVALID_UPDATE_MASK",
                violations=violations,
            )
        if "name" in paths and not fields.name:
            raise InvalidArgument(
                "config.name cannot be cleared.",
                reason="NAME_REQUIRED",
                violations=[FieldViolation("config.name", "is required")],
            )
        return list(dict.fromkeys(paths))

    async def _check_unique(
        self, uow: ConfigUnitOfWork, tenant_id: str, config: Config, new: bool = True
    ) -> None:
        if new and await uow.configs.get(tenant_id, config.config_id) is not None:
            raise AlreadyExists(
                f"Config id {config.config_id!r} is taken (ids of deleted configs stay taken: "
                "their revisions remain readable).",
                reason="CONFIG_ID_TAKEN",
                resource_type="Config",
                resource_name=config.config_id,
            )
        owner = await uow.configs.live_name_owner(tenant_id, config.name)
        if owner is not None and owner != config.config_id:
            raise AlreadyExists(
                f"A config named {config.name!r} exists already.",
                reason="CONFIG_NAME_TAKEN",
                resource_type="Config",
                resource_name=owner,
                metadata={"name": config.name, "config_id": owner},
            )

    async def _check_quota(self, uow: ConfigUnitOfWork, tenant_id: str) -> None:
        limit = self._options.policies(tenant_id).quotas.configs
        if limit <= 0:
            return
        # Under the tenant's lock, so concurrent creates on any replica cannot all squeeze in.
        await lock_tenant(uow.session, "configs", tenant_id)
        used = await uow.configs.count_live(tenant_id, [])
        check_count(tenant_id, "configs", used, limit, "delete configs it no longer needs.")

    async def _prune(self, uow: ConfigUnitOfWork, sequence: int) -> None:
        # Pruning on every write would double its cost; every 64th keeps the log near its bound.
        keep = self._options.change_retention
        if sequence % min(64, keep) == 0:
            await uow.changes.prune(keep)

    # Watch ------------------------------------------------------------------------------

    async def open_watch(self, tenant_id: str | None, after_sequence: int) -> int:
        """Checks where a watch would start and returns its cursor (0 means from now on).

        A tenant's watch counts in its own sequence; None (a service identity) in the global one.
        """
        if after_sequence < 0:
            raise InvalidArgument(
                "after_sequence must not be negative.",
                violations=[FieldViolation("after_sequence", "must be >= 0")],
            )
        async with self._unit_of_work() as uow:
            oldest, latest = await uow.changes.bounds(tenant_id)
        if after_sequence > latest:
            raise OutOfRange(
                f"after_sequence {after_sequence} is past the latest change ({latest}).",
                reason="SEQUENCE_IN_FUTURE",
                metadata={"latest_sequence": str(latest)},
                violations=[FieldViolation("after_sequence", f"must be <= {latest}")],
            )
        cursor = latest if after_sequence == 0 else after_sequence
        if oldest and cursor < oldest - 1:
            raise _expired(cursor, oldest)
        return cursor

    async def follow(self, tenant_id: str | None, cursor: int) -> AsyncIterator[ConfigChange]:
        """The tenant's changes after cursor, then new ones as they commit, until drained.

        tenant_id None follows every tenant (a service identity invalidating its caches).
        """
        while True:
            if self._changes.closed:
                raise Unavailable(
                    "The server is shutting down; resume with after_sequence "
                    f"{cursor} on another replica.",
                    reason="SERVER_DRAINING",
                    metadata={"last_sequence": str(cursor)},
                )
            ticket = self._changes.ticket()
            # A watcher that hangs up mid-read must not cancel the read itself: a connection
            # cancelled inside the driver is terminated rather than returned to the pool.
            oldest, batch = await asyncio.shield(self._read_changes(tenant_id, cursor))
            if oldest and cursor < oldest - 1:
                raise _expired(cursor, oldest)
            for change in batch:
                yield change
                cursor = change.sequence
            if len(batch) < WATCH_BATCH:
                await Broadcast.wait(ticket, self._options.watch_poll_seconds)

    async def _read_changes(
        self, tenant_id: str | None, cursor: int
    ) -> tuple[int, list[ConfigChange]]:
        async with self._unit_of_work() as uow:
            oldest, _ = await uow.changes.bounds(tenant_id)
            return oldest, await uow.changes.after(tenant_id, cursor, WATCH_BATCH)

    def drain(self) -> None:
        """Ends every watch stream so its client resumes on another replica."""
        self._changes.close()


def _expired(cursor: int, oldest: int) -> OutOfRange:
    return OutOfRange(
        f"Changes after sequence {cursor} are no longer retained (oldest is {oldest}); "
        "re-read the configs and watch from the latest sequence.",
        reason="SEQUENCE_EXPIRED",
        metadata={"oldest_sequence": str(oldest)},
        violations=[FieldViolation("after_sequence", f"must be >= {oldest - 1}")],
    )


def _same_content(a: Config, b: Config) -> bool:
    return (a.name, a.description, a.yaml_content, dict(a.tags)) == (
        b.name,
        b.description,
        b.yaml_content,
        dict(b.tags),
    )
