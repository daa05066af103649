"""ConfigService's use cases: every read and write of configs, revisions and changes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from config_service.configs.cache import ConfigCache
from config_service.configs.edits import Edit
from config_service.configs.model import (
    OUTPUT_ONLY_PATHS,
    UPDATABLE_PATHS,
    ChangeType,
    Config,
    ConfigChange,
    ConfigFields,
    ConfigKind,
    Watcher,
    check_config_id,
    check_fields,
    make_etag,
)
from config_service.configs.packages import (
    MAX_SOURCE_URI_LENGTH,
    IncomingFile,
    Package,
    PackageFile,
    PackageLimits,
    package_fingerprint,
    read_package,
)
from config_service.configs.ports import ConfigUoW, ConfigUoWFactory
from config_service.configs.resolution import Located, occurrences, unresolved
from shared.broadcast import Broadcast
from shared.bundle.references import canonical_source, split_name
from shared.bundle.validate import (
    Limits,
    Severity,
    ValidationResult,
    Violation,
    validate_agent,
    validate_context,
    validate_document,
)
from shared.clock import utcnow
from shared.cpu import CpuSlots
from shared.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    QuotaViolation,
    ResourceExhausted,
    Unavailable,
)
from shared.idempotency import check_request_id, fingerprint, first_response
from shared.listing import (
    Condition,
    Page,
    decode_page_token,
    page_of,
    page_scope,
    page_size,
    parse_filter,
)
from shared.quotas import PolicyLookup, check_count, unlimited
from shared.visibility import SEES_ALL, Viewer, Visibility, caller

R = TypeVar("R")

FILTER_FIELDS = ("name", "bundle.name", "namespace", "kind", "path", "source_uri")
FILTER_PREFIXES = ("tags.",)
CREATE_METHOD = "CreateConfig"
IMPORT_METHOD = "ImportBundle"
# Violations an import refusal lists in its BadRequest; the status mapping lists fewer still
# and says how many more there are. validate_only returns every one in the response.
MAX_LISTED_ERRORS = 50
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
    # Caps on one ImportBundle.
    package_limits: PackageLimits = dataclasses.field(default_factory=PackageLimits)


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What an import did, or (validate_only) would do.

    `configs` are the package's files as stored (or as they would be: a file still to be
    created has no id yet), in the order they were sent. `warnings` holds the findings that
    did not stop the import; with validate_only it holds every finding, errors included.
    """

    namespace: str
    configs: tuple[Config, ...]
    warnings: tuple[Violation, ...]
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclasses.dataclass(frozen=True)
class Watch:
    """An open watch of the change stream: whose changes it follows (None: every tenant's,
    in the global sequence) and the sequence it follows them after."""

    tenant_id: str | None
    cursor: int
    # Who watches: changes of configs this viewer may not see are left out. Not part of
    # where the watch is, so not of its equality.
    viewer: Viewer = dataclasses.field(default=SEES_ALL, compare=False)


@dataclasses.dataclass
class _Plan:
    """How the stored package changes to match the one sent."""

    configs: list[Config]
    created: list[Config]
    updated: list[Config]
    unchanged: list[Config]
    deleted: list[Config]


def _not_found(config_id: str, revision: int = 0) -> NotFound:
    what = f"Config {config_id!r}" + (f" revision {revision}" if revision else "")
    return NotFound(
        f"{what} does not exist.",
        reason="CONFIG_NOT_FOUND",
        resource_type="Config",
        resource_name=config_id if not revision else f"{config_id}@{revision}",
    )


def _seen(found: Config | None, viewer: Viewer) -> bool:
    """Whether found exists and viewer may see it (the one check every read and write of a
    config makes; an invisible config is answered exactly as an unknown one)."""
    return found is not None and viewer.may_see(found.owner, found.visibility, found.team)


def _not_shareable(current: Config) -> PermissionDenied:
    return PermissionDenied(
        f"Only the owner of config {current.config_id!r} or a tenant admin may change its "
        "visibility.",
        reason="VISIBILITY_CHANGE_DENIED",
        metadata={"config_id": current.config_id, "field": "config.visibility"},
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
        unit_of_work: ConfigUoWFactory,
        changes: Broadcast,
        options: ConfigServiceOptions | None = None,
        cache: ConfigCache | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._changes = changes
        self._options = options or ConfigServiceOptions()
        self._cpu = CpuSlots(self._options.cpu_slots)
        self._cache = cache or ConfigCache()

    @contextlib.asynccontextmanager
    async def _unit(self, *, write: bool) -> AsyncIterator[ConfigUoW]:
        """A unit of work; after one that writes, cached latest configs are forgotten.

        Forgotten after the unit ends, committed or not (a commit whose outcome is unknown
        may have happened), and before the use case returns, so no later read here sees
        what was there before the write.
        """
        try:
            async with self._unit_of_work(write=write) as uow:
                yield uow
        finally:
            if write:
                self._cache.invalidate()

    # Validation -------------------------------------------------------------------------

    async def validate(self, tenant_id: str, yaml_content: str) -> ValidationResult:
        """Checks a document under the tenant's policy; writes nothing.

        References (includes, agents, context, `@NS:PATH` mentions) that resolve to nothing
        in the tenant are WARNINGs among the violations.
        """
        result = await self._check(tenant_id, yaml_content, ConfigKind.BUNDLE)
        found = _occurrences(result, yaml_content, "")
        if not found:
            return result
        async with self._unit_of_work() as uow:
            warnings = await unresolved(uow.configs, tenant_id, found)
        if not warnings:
            return result
        merged = sorted((*result.violations, *warnings), key=lambda v: (v.line, v.column))
        return dataclasses.replace(result, violations=tuple(merged))

    async def _check(self, tenant_id: str, text: str, kind: ConfigKind) -> ValidationResult:
        """Validates text as a document of kind, off the event loop."""
        allow = self._options.policies(tenant_id).allow_literal_secrets
        limits = self._options.limits
        if kind is ConfigKind.CONTEXT:
            return await self._cpu.run(validate_context, text, limits)
        validator = validate_agent if kind is ConfigKind.AGENT else validate_document
        return await self._cpu.run(validator, text, limits, allow_literal_secrets=allow)

    async def _require_valid(
        self,
        tenant_id: str,
        yaml_content: str,
        field_path: str,
        kind: ConfigKind = ConfigKind.BUNDLE,
    ) -> ValidationResult:
        result = await self._check(tenant_id, yaml_content, kind)
        if not result.valid:
            raise InvalidArgument(
                f"The {_KIND_NAMES[kind]} is invalid ({len(result.errors)} error(s)).",
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
        current = self._cache.latest(tenant_id, config_id)
        if current is None:
            generation = self._cache.generation
            async with self._unit_of_work() as uow:
                current = await uow.configs.get(tenant_id, config_id)
            if current is not None:
                self._cache.keep_latest(tenant_id, current, generation)
        # Who sees a revision is decided by the config as it is now, deleted or not: making
        # a config private hides its history too.
        if current is None or not _seen(current, caller()):
            raise _not_found(config_id, revision)
        if not revision:
            if current.delete_time is not None:
                raise _not_found(config_id)
            return current
        found = self._cache.revision(tenant_id, config_id, revision)
        if found is None:
            async with self._unit_of_work() as uow:
                found = await uow.configs.get_revision(tenant_id, config_id, revision)
            if found is not None:
                self._cache.keep_revision(tenant_id, found)
        if found is None:
            raise _not_found(config_id, revision)
        return found

    async def list_configs(
        self, tenant_id: str, filter_text: str, requested_size: int, page_token: str
    ) -> Page[Config]:
        """One page of live configs matching the filter, ordered by id."""
        size = page_size(requested_size)
        conditions = [
            _kind_condition(c) if c.field == "kind" else c
            for c in parse_filter(filter_text, FILTER_FIELDS, FILTER_PREFIXES)
        ]
        scope = page_scope("configs", tenant_id, filter_text)
        after = decode_page_token(page_token, scope, shape=(str,))
        after_id = str(after[0]) if after else None
        viewer = caller()
        async with self._unit_of_work() as uow:
            items = await uow.configs.list_live(
                tenant_id, conditions, after_id, size + 1, viewer=viewer
            )
            total = await uow.configs.count_live(tenant_id, conditions, viewer=viewer)
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
            if current is None or not _seen(current, caller()):
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
        validate_only: bool = False,
    ) -> Config:
        """Creates a config at revision 1.

        A repeat of `request_id` with the same config_id and fields returns the first
        response and writes nothing; with anything different it is refused
        (REQUEST_ID_REUSED).
        """
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
        viewer = caller()
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
            owner=viewer.subject,
            visibility=fields.visibility or Visibility.ORG,
            team=viewer.team,
        )
        if validate_only:
            async with self._unit_of_work() as uow:
                await self._check_unique(uow, tenant_id, config)
                warnings = await self._write_warnings(uow, tenant_id, result, content, "")
            return dataclasses.replace(config, etag="", warnings=warnings)
        request_fingerprint = _create_fingerprint(config_id, fields) if request_id else ""
        return await first_response(
            lambda: self._create_once(tenant_id, config, result, request_id, request_fingerprint)
        )

    async def _write_warnings(
        self,
        uow: ConfigUoW,
        tenant_id: str,
        result: ValidationResult,
        text: str,
        namespace: str,
    ) -> tuple[Violation, ...]:
        """A write's findings: the document's own warnings, then references to nothing."""
        found = _occurrences(result, text, namespace)
        references = await unresolved(uow.configs, tenant_id, found) if found else []
        own = [v for v in result.violations if v.severity is Severity.WARNING]
        return (*own, *references)

    async def _create_once(
        self,
        tenant_id: str,
        config: Config,
        result: ValidationResult,
        request_id: str,
        request_fingerprint: str,
    ) -> Config:
        async with self._unit(write=True) as uow:
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
                    # The request_id is the tenant's: another caller repeating it gets
                    # nothing it may not see.
                    current = await uow.configs.get(tenant_id, replay.config_id)
                    if not _seen(current, caller()):
                        raise _not_found(replay.config_id)
                    return dataclasses.replace(
                        replay, warnings=_warnings_from_json(first.get("warnings", []))
                    )
            warnings = await self._write_warnings(uow, tenant_id, result, config.yaml_content, "")
            if request_id:
                # Claimed first: a concurrent duplicate waits on this key, not on the name.
                first_response = {
                    "config_id": config.config_id,
                    "revision": 1,
                    "warnings": _warnings_to_json(warnings),
                }
                await uow.idempotency.record(
                    tenant_id,
                    CREATE_METHOD,
                    request_id,
                    request_fingerprint,
                    json.dumps(first_response, separators=(",", ":")).encode(),
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
        return dataclasses.replace(config, warnings=warnings)

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
        viewer = caller()

        def apply(current: Config) -> Config:
            if (
                "visibility" in chosen
                and fields.visibility is not current.visibility
                and not viewer.may_share(current.owner)
            ):
                raise _not_shareable(current)
            changes: dict[str, Any] = {}
            for path in chosen:
                value = getattr(fields, path)
                changes[path] = value if value is not None else ({} if path == "tags" else "")
            return dataclasses.replace(current, **changes)

        return await self._revise(tenant_id, config_id, etag, apply, validate_only=validate_only)

    async def edit(self, tenant_id: str, config_id: str, etag: str, change: Edit) -> Config:
        """Rewrites the document in place (add/remove a tool, provider or include)."""

        def apply(current: Config) -> Config:
            if current.kind is ConfigKind.CONTEXT:
                raise FailedPrecondition(
                    f"Config {current.config_id!r} is a context file: it has no tools, "
                    "providers or includes to edit.",
                    reason="NOT_A_BUNDLE_DOCUMENT",
                    violations=[
                        PreconditionViolation(
                            "CONFIG_KIND",
                            f"configs/{current.config_id}",
                            "only bundle and agent documents can be edited this way",
                        )
                    ],
                )
            return dataclasses.replace(current, yaml_content=change.apply(current.yaml_content))

        return await self._revise(tenant_id, config_id, etag, apply)

    async def rollback(self, tenant_id: str, config_id: str, revision: int, etag: str) -> Config:
        """A new revision whose content equals an old one."""
        if revision <= 0:
            raise InvalidArgument(
                "revision must be a positive revision number.",
                violations=[FieldViolation("revision", "must be >= 1")],
            )
        async with self._unit_of_work() as uow:
            current = await uow.configs.get(tenant_id, config_id)
            # An invisible config's revisions are answered as an unknown config's would be.
            visible = _seen(current, caller())
            old = (
                await uow.configs.get_revision(tenant_id, config_id, revision) if visible else None
            )
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
        async with self._unit(write=True) as uow:
            current = await uow.configs.get(tenant_id, config_id, for_update=True)
            if current is None or current.delete_time is not None or not _seen(current, caller()):
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
        async with self._unit(write=not validate_only) as uow:
            current = await uow.configs.get(tenant_id, config_id, for_update=not validate_only)
            if current is None or current.delete_time is not None or not _seen(current, caller()):
                raise _not_found(config_id)
            _check_etag(current, etag)
            # An edit re-parses and re-dumps the whole document: seconds for a large one.
            proposed = await self._cpu.run(apply, current)
            if not always and _same_content(current, proposed):
                return current
            result = await self._require_valid(
                tenant_id, proposed.yaml_content, "config.yaml_content", current.kind
            )
            if proposed.name != current.name:
                if current.namespace:
                    raise FailedPrecondition(
                        f"Config {config_id!r} was imported as file {current.path!r} of package "
                        f"{current.namespace!r}: its name follows from that path.",
                        reason="IMPORTED_NAME",
                        violations=[
                            PreconditionViolation(
                                "IMPORTED_NAME",
                                f"configs/{config_id}",
                                "rename the file in the package and import it again",
                            )
                        ],
                    )
                await self._check_unique(uow, tenant_id, proposed, new=False)
            warnings = await self._write_warnings(
                uow, tenant_id, result, proposed.yaml_content, current.namespace
            )
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
                return dataclasses.replace(revised, etag="", warnings=warnings)
            await uow.configs.save_revision(tenant_id, revised)
            sequence = await uow.changes.append(tenant_id, ChangeType.UPDATED, revised, now)
            await self._prune(uow, sequence)
            await uow.commit()
        self._changes.notify()
        return dataclasses.replace(revised, warnings=warnings)

    @staticmethod
    def _update_paths(fields: ConfigFields, paths: list[str] | None) -> list[str]:
        if paths is None:
            return [p for p in UPDATABLE_PATHS if getattr(fields, p)]
        if paths == ["*"]:
            # Visibility unspecified keeps it as it is, rather than resetting who sees it.
            return [p for p in UPDATABLE_PATHS if p != "visibility" or fields.visibility]
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
        if "visibility" in paths and fields.visibility is None:
            raise InvalidArgument(
                "config.visibility must be VISIBILITY_PRIVATE, VISIBILITY_TEAM or VISIBILITY_ORG.",
                reason="VISIBILITY_REQUIRED",
                violations=[FieldViolation("config.visibility", "is required")],
            )
        return list(dict.fromkeys(paths))

    async def _check_unique(
        self, uow: ConfigUoW, tenant_id: str, config: Config, new: bool = True
    ) -> None:
        if new and await uow.configs.get(tenant_id, config.config_id) is not None:
            raise AlreadyExists(
                f"Config id {config.config_id!r} is taken (ids of deleted configs stay taken: "
                "their revisions remain readable).",
                reason="CONFIG_ID_TAKEN",
                resource_type="Config",
                resource_name=config.config_id,
            )
        namespace, path = split_name(config.name)
        if path and await uow.configs.namespace_is_imported(tenant_id, namespace):
            # A file made by hand inside an imported package would block its next import.
            raise AlreadyExists(
                f"Namespace {namespace!r} belongs to an imported bundle package; add "
                f"{path!r} to the package and import it again.",
                reason="NAMESPACE_IMPORTED",
                resource_type="BundlePackage",
                resource_name=namespace,
                metadata={"namespace": namespace},
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

    async def _check_quota(self, uow: ConfigUoW, tenant_id: str) -> None:
        limit = self._options.policies(tenant_id).quotas.configs
        if limit <= 0:
            return
        # Under the tenant's lock, so concurrent creates on any replica cannot all squeeze in.
        await uow.configs.lock_tenant(tenant_id, "configs")
        used = await uow.configs.count_live(tenant_id, [])
        check_count(tenant_id, "configs", used, limit, "delete configs it no longer needs.")

    async def _prune(self, uow: ConfigUoW, sequence: int) -> None:
        # Pruning on every write would double its cost; every 64th keeps the log near its bound.
        keep = self._options.change_retention
        if sequence % min(64, keep) == 0:
            await uow.changes.prune(keep)

    # Bundle packages --------------------------------------------------------------------

    async def import_bundle(
        self,
        tenant_id: str,
        files: list[IncomingFile],
        *,
        source_uri: str = "",
        request_id: str = "",
        validate_only: bool = False,
    ) -> ImportResult:
        """Stores a bundle package under its namespace, all or nothing.

        A re-import of the namespace revises the files that changed, creates new ones and
        deletes (softly: revisions stay readable) those that are gone; each write is a change
        on the watch stream. One invalid file refuses the whole package (INVALID_ARGUMENT,
        located by file path); validate_only instead returns every finding in `warnings`,
        errors included, and writes nothing. A repeat of `request_id` with the same files and
        source_uri returns the first result and writes nothing; with anything different it is
        refused (REQUEST_ID_REUSED).

        A config created on its own with the namespace as its name is adopted as the
        package's root bundle (its id and revisions stay); any other live config holding a
        name the package needs refuses the import (ALREADY_EXISTS), as does a source_uri
        another package was imported from (its `git+https` references would be ambiguous).
        """
        if request_id:
            check_request_id(request_id)
        if len(source_uri) > MAX_SOURCE_URI_LENGTH:
            raise InvalidArgument(
                f"source_uri is longer than {MAX_SOURCE_URI_LENGTH} characters.",
                reason="FIELD_TOO_LARGE",
                violations=[FieldViolation("source_uri", f"longer than {MAX_SOURCE_URI_LENGTH}")],
            )
        request_fingerprint = ""
        if request_id and not validate_only:
            request_fingerprint = package_fingerprint(files, source_uri)
            # A retry costs a lookup, not a second validation of the whole package.
            async with self._unit_of_work() as uow:
                replay = await self._replay_import(uow, tenant_id, request_id, request_fingerprint)
            if replay is not None:
                return replay
        package = await self._cpu.run(
            read_package,
            files,
            self._options.package_limits,
            allow_literal_secrets=self._options.policies(tenant_id).allow_literal_secrets,
            document_limits=self._options.limits,
        )
        if package.errors and not validate_only:
            raise _invalid_package(package)
        if validate_only:
            return await self._dry_import(tenant_id, package, source_uri)
        return await first_response(
            lambda: self._import_once(
                tenant_id, package, source_uri, request_id, request_fingerprint
            )
        )

    async def _dry_import(self, tenant_id: str, package: Package, source_uri: str) -> ImportResult:
        if not package.namespace:
            return ImportResult("", (), package.violations)
        async with self._unit_of_work() as uow:
            try:
                plan = await self._plan_import(
                    uow, tenant_id, package, source_uri, utcnow(), lock=False
                )
            except AlreadyExists as exc:
                conflict = Violation("files", 0, 0, exc.message, Severity.ERROR)
                return ImportResult(package.namespace, (), (conflict, *package.violations))
            references = await self._package_warnings(uow, tenant_id, package, source_uri)
        created = {c.config_id for c in plan.created}
        return ImportResult(
            package.namespace,
            tuple(
                dataclasses.replace(
                    c, etag="", config_id="" if c.config_id in created else c.config_id
                )
                for c in plan.configs
            ),
            (*package.violations, *references),
            created=len(plan.created),
            updated=len(plan.updated),
            unchanged=len(plan.unchanged),
            deleted=len(plan.deleted),
        )

    async def _import_once(
        self,
        tenant_id: str,
        package: Package,
        source_uri: str,
        request_id: str,
        request_fingerprint: str,
    ) -> ImportResult:
        now = utcnow()
        async with self._unit(write=True) as uow:
            if request_id:
                replay = await self._replay_import(uow, tenant_id, request_id, request_fingerprint)
                if replay is not None:
                    return replay
            # Imports of one namespace run one at a time on every replica.
            await uow.configs.lock_tenant(tenant_id, f"bundle:{package.namespace}")
            plan = await self._plan_import(uow, tenant_id, package, source_uri, now)
            warnings = (
                *package.warnings,
                *await self._package_warnings(uow, tenant_id, package, source_uri),
            )
            result = ImportResult(
                package.namespace,
                tuple(plan.configs),
                tuple(warnings),
                created=len(plan.created),
                updated=len(plan.updated),
                unchanged=len(plan.unchanged),
                deleted=len(plan.deleted),
            )
            if request_id:
                await uow.idempotency.record(
                    tenant_id,
                    IMPORT_METHOD,
                    request_id,
                    request_fingerprint,
                    _import_record(result),
                )
            await self._check_import_quota(uow, tenant_id, plan)
            # Deletes first: a file that moved (behaviors/x.yaml → behaviors/x.md) keeps its
            # name, which must be free among live configs before the new one takes it.
            await uow.configs.mark_deleted_many(tenant_id, [c.config_id for c in plan.deleted], now)
            for config in plan.updated:
                await uow.configs.save_revision(tenant_id, config)
            await uow.configs.insert_many(tenant_id, plan.created)
            changes = [
                *((ChangeType.DELETED, c) for c in plan.deleted),
                *((ChangeType.UPDATED, c) for c in plan.updated),
                *((ChangeType.CREATED, c) for c in plan.created),
            ]
            if changes:
                last = await uow.changes.append_many(tenant_id, changes, now)
                await self._prune_after(uow, last - len(changes), last)
            await uow.commit()
        if changes:
            self._changes.notify()
        return result

    async def _plan_import(
        self,
        uow: ConfigUoW,
        tenant_id: str,
        package: Package,
        source_uri: str,
        now: datetime,
        *,
        lock: bool = True,
    ) -> _Plan:
        namespace = package.namespace
        stored = await uow.configs.live_in_namespace(tenant_id, namespace, for_update=lock)
        viewer = caller()
        if not all(_seen(config, viewer) for config in stored):
            # A re-import revises or removes every file of the package: not files its
            # importer may not see. Which ones stays hidden.
            raise AlreadyExists(
                f"Package {namespace!r} holds files you may not see; their owner or a tenant "
                "admin can import it.",
                reason="PACKAGE_NOT_VISIBLE",
                resource_type="BundlePackage",
                resource_name=namespace,
                metadata={"namespace": namespace},
            )
        by_path = {config.path: config for config in stored}
        own_ids = {config.config_id for config in stored}
        taken = [
            c
            for c in await uow.configs.live_by_names(tenant_id, [f.name for f in package.files])
            if c.config_id not in own_ids
        ]
        adopted: Config | None = None
        for config in taken:
            if config.name == namespace and not config.namespace and _seen(config, viewer):
                # The namespace's bundle, created on its own: it becomes the package root.
                adopted = config
                continue
            raise AlreadyExists(
                f"Config {config.name!r} exists already and is not part of package "
                f"{namespace!r}; delete or rename it, then import again.",
                reason="CONFIG_NAME_TAKEN",
                resource_type="Config",
                resource_name=config.config_id,
                metadata={"name": config.name, "config_id": config.config_id},
            )
        if source_uri:
            others = await uow.configs.namespaces_of_source(tenant_id, canonical_source(source_uri))
            others.discard(namespace)
            if others:
                other = sorted(others)[0]
                raise AlreadyExists(
                    f"Package {other!r} was imported from the same source "
                    f"{canonical_source(source_uri)!r}; git+https references to it would be "
                    "ambiguous. Delete that package's configs first, or import from another "
                    "source_uri.",
                    reason="SOURCE_URI_TAKEN",
                    resource_type="BundlePackage",
                    resource_name=other,
                    metadata={"namespace": other},
                )

        plan = _Plan([], [], [], [], [])
        for file in package.files:
            current = by_path.pop(file.path, None)
            if current is None and adopted is not None and file.name == adopted.name:
                current = adopted
            if current is None:
                config = _new_config(tenant_id, file, namespace, source_uri, now, viewer)
                plan.created.append(config)
            elif _same_file(current, file, namespace, source_uri):
                config = current
                plan.unchanged.append(config)
            else:
                config = _revised_config(
                    tenant_id, current, file, namespace, source_uri, now, viewer
                )
                plan.updated.append(config)
            plan.configs.append(config)
        plan.deleted.extend(
            dataclasses.replace(config, delete_time=now) for config in by_path.values()
        )
        return plan

    async def _package_warnings(
        self, uow: ConfigUoW, tenant_id: str, package: Package, source_uri: str
    ) -> list[Violation]:
        """References to nothing in the tenant as it will be after the import."""
        found: list[Located] = [(f.path, o) for f in package.files for o in f.references]
        if not found:
            return []
        key = canonical_source(source_uri) if source_uri else ""
        return await unresolved(
            uow.configs,
            tenant_id,
            found,
            local_names={f.name for f in package.files},
            local_sources={(key, f.path) for f in package.files} if key else set(),
            outside_namespace=package.namespace,
        )

    async def _replay_import(
        self, uow: ConfigUoW, tenant_id: str, request_id: str, request_fingerprint: str
    ) -> ImportResult | None:
        earlier = await uow.idempotency.find(
            tenant_id, IMPORT_METHOD, request_id, request_fingerprint
        )
        if earlier is None:
            return None
        first = json.loads(earlier.response)
        pairs = [(str(config_id), int(revision)) for config_id, revision in first["configs"]]
        found = await uow.configs.get_revisions(tenant_id, pairs)
        return ImportResult(
            namespace=first["namespace"],
            configs=tuple(found[pair] for pair in pairs),
            warnings=_warnings_from_json(first["warnings"]),
            created=first["counts"][0],
            updated=first["counts"][1],
            unchanged=first["counts"][2],
            deleted=first["counts"][3],
        )

    async def _check_import_quota(self, uow: ConfigUoW, tenant_id: str, plan: _Plan) -> None:
        limit = self._options.policies(tenant_id).quotas.configs
        growth = len(plan.created) - len(plan.deleted)
        if limit <= 0 or growth <= 0:
            return
        await uow.configs.lock_tenant(tenant_id, "configs")
        used = await uow.configs.count_live(tenant_id, [])
        if used + growth <= limit:
            return
        raise ResourceExhausted(
            f"Tenant {tenant_id!r} holds {used} configs; this import would add {growth} more, "
            f"past its quota of {limit}. Delete configs it no longer needs.",
            reason="QUOTA_EXCEEDED",
            metadata={"quota": "configs", "limit": str(limit), "used": str(used)},
            violations=[
                QuotaViolation(
                    f"tenant:{tenant_id}", f"configs: {used} of {limit} used, {growth} more asked"
                )
            ],
        )

    async def _prune_after(self, uow: ConfigUoW, first: int, last: int) -> None:
        # As _prune, for a batch of sequences (first, last]: prune if it crossed a multiple.
        step = min(64, self._options.change_retention)
        if last // step > first // step:
            await uow.changes.prune(self._options.change_retention)

    # Watch ------------------------------------------------------------------------------

    async def open_watch(self, watcher: Watcher, after_sequence: int) -> Watch:
        """Checks where a watch would start and opens it (after_sequence 0 means from now on).

        The watcher's scope decides whose changes it follows: a tenant's caller its own, in
        the tenant's sequence; a service identity every tenant's, in the global sequence.
        """
        tenant_id = watcher.scope
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
        return Watch(tenant_id, cursor, caller())

    async def follow(self, watch: Watch) -> AsyncIterator[ConfigChange]:
        """The watched changes after its cursor, then new ones as they commit, until drained.

        A watch of tenant_id None follows every tenant (a service identity invalidating its
        caches); open_watch decides that.
        """
        tenant_id, cursor = watch.tenant_id, watch.cursor
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
            shown = await asyncio.shield(self._visible_changes(tenant_id, watch.viewer, batch))
            for change in batch:
                if change.config_id in shown:
                    yield change
                cursor = change.sequence
            if len(batch) < WATCH_BATCH:
                await Broadcast.wait(ticket, self._options.watch_poll_seconds)

    async def _visible_changes(
        self, tenant_id: str | None, viewer: Viewer, batch: Sequence[ConfigChange]
    ) -> set[str]:
        """The ids of batch's configs the watcher may see: names of the others stay hidden."""
        ids = {change.config_id for change in batch}
        if viewer.sees_all or tenant_id is None or not ids:
            return ids
        async with self._unit_of_work() as uow:
            return await uow.configs.visible_ids(tenant_id, sorted(ids), viewer)

    async def _read_changes(
        self, tenant_id: str | None, cursor: int
    ) -> tuple[int, list[ConfigChange]]:
        async with self._unit_of_work() as uow:
            oldest, _ = await uow.changes.bounds(tenant_id)
            return oldest, await uow.changes.after(tenant_id, cursor, WATCH_BATCH)

    def drain(self) -> None:
        """Ends every watch stream so its client resumes on another replica."""
        self._changes.close()


def _create_fingerprint(config_id: str, fields: ConfigFields) -> str:
    """What identifies a create request: the id asked for and the fields as they will be
    stored. A repeat of a request_id with any of them different is a reused id."""
    canonical = {
        "config_id": config_id,
        "name": fields.name or "",
        "description": fields.description or "",
        "yaml_content": fields.yaml_content or "",
        "tags": dict(fields.tags or {}),
    }
    if fields.visibility is not None:
        # Only when given, so fingerprints recorded before visibility existed still match.
        canonical["visibility"] = fields.visibility.value
    return fingerprint(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())


def _expired(cursor: int, oldest: int) -> OutOfRange:
    return OutOfRange(
        f"Changes after sequence {cursor} are no longer retained (oldest is {oldest}); "
        "re-read the configs and watch from the latest sequence.",
        reason="SEQUENCE_EXPIRED",
        metadata={"oldest_sequence": str(oldest)},
        violations=[FieldViolation("after_sequence", f"must be >= {oldest - 1}")],
    )


def _occurrences(result: ValidationResult, text: str, namespace: str) -> list[Located]:
    """The references a validated bundle or agent document makes (none when unparsed)."""
    bundle = result.bundle
    if bundle is None:
        return []
    locate = bundle.locations.value if bundle.locations is not None else None
    return [("", o) for o in occurrences(bundle.data, text, namespace, locate)]


_KIND_NAMES = {
    ConfigKind.BUNDLE: "bundle document",
    ConfigKind.AGENT: "agent file",
    ConfigKind.CONTEXT: "context file",
}


def _kind_condition(condition: Condition) -> Condition:
    """`kind = AGENT` (or `CONFIG_KIND_AGENT`, any case) as stored; unknown kinds refused."""
    value = condition.value.upper().removeprefix("CONFIG_KIND_")
    if value not in {kind.value for kind in ConfigKind} and not condition.is_pattern:
        raise InvalidArgument(
            f"Invalid filter: kind must be BUNDLE, AGENT or CONTEXT, not {condition.value!r}.",
            reason="INVALID_FILTER",
            violations=[FieldViolation("filter", "kind must be BUNDLE, AGENT or CONTEXT")],
        )
    return dataclasses.replace(condition, value=value)


def _invalid_package(package: Package) -> InvalidArgument:
    errors = package.errors
    return InvalidArgument(
        f"The bundle package is invalid ({len(errors)} error(s)); nothing was imported.",
        reason="INVALID_BUNDLE_PACKAGE",
        metadata={"errors": str(len(errors))},
        violations=[
            FieldViolation(v.field, v.message, line=v.line, column=v.column)
            for v in errors[:MAX_LISTED_ERRORS]
        ],
    )


def _new_config(
    tenant_id: str,
    file: PackageFile,
    namespace: str,
    source_uri: str,
    now: datetime,
    importer: Viewer,
) -> Config:
    # Ids of imported files are random, like CreateConfig's: a file removed and added back
    # later gets a new id, since a deleted config's id stays taken by its revisions.
    config_id = uuid.uuid4().hex
    return Config(
        config_id=config_id,
        name=file.name,
        description=file.description,
        yaml_content=file.text,
        tags={},
        revision=1,
        etag=make_etag(tenant_id, config_id, 1, file.text),
        create_time=now,
        update_time=now,
        summary=file.summary,
        kind=file.kind,
        namespace=namespace,
        path=file.path,
        source_uri=source_uri,
        # A package is shared with the whole tenant, in the name of whoever imported it.
        owner=importer.subject,
        visibility=Visibility.ORG,
        team=importer.team,
    )


def _same_file(current: Config, file: PackageFile, namespace: str, source_uri: str) -> bool:
    return (
        current.yaml_content,
        current.name,
        current.description,
        current.kind,
        current.namespace,
        current.path,
        current.source_uri,
    ) == (file.text, file.name, file.description, file.kind, namespace, file.path, source_uri)


def _revised_config(
    tenant_id: str,
    current: Config,
    file: PackageFile,
    namespace: str,
    source_uri: str,
    now: datetime,
    importer: Viewer,
) -> Config:
    revision = current.revision + 1
    # Tags are the tenant's own, never part of a package: they carry over.
    return dataclasses.replace(
        current,
        name=file.name,
        description=file.description,
        yaml_content=file.text,
        revision=revision,
        etag=make_etag(tenant_id, current.config_id, revision, file.text),
        update_time=now,
        summary=file.summary,
        kind=file.kind,
        namespace=namespace,
        path=file.path,
        source_uri=source_uri,
        owner=importer.subject,
        visibility=Visibility.ORG,
        team=importer.team,
    )


def _warnings_to_json(warnings: Sequence[Violation]) -> list[list[Any]]:
    return [[v.field, v.line, v.column, v.message, v.severity.value] for v in warnings]


def _warnings_from_json(stored: Sequence[Sequence[Any]]) -> tuple[Violation, ...]:
    return tuple(
        Violation(str(field), int(line), int(column), str(message), Severity(severity))
        for field, line, column, message, severity in stored
    )


def _import_record(result: ImportResult) -> bytes:
    """The first response of an import, as the idempotency table keeps it: ids and
    revisions (revisions are immutable), warnings and counts."""
    return json.dumps(
        {
            "namespace": result.namespace,
            "configs": [[c.config_id, c.revision] for c in result.configs],
            "warnings": _warnings_to_json(result.warnings),
            "counts": [result.created, result.updated, result.unchanged, result.deleted],
        },
        separators=(",", ":"),
    ).encode()


def _same_content(a: Config, b: Config) -> bool:
    return (a.name, a.description, a.yaml_content, dict(a.tags), a.visibility) == (
        b.name,
        b.description,
        b.yaml_content,
        dict(b.tags),
        b.visibility,
    )
