"""gRPC servicer for tandem.config.v1.ConfigService: translation only."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import empty_pb2

from config_service.configs.edits import AddInclude, AddModule, RemoveInclude, RemoveModule
from config_service.configs.model import (
    ChangeType,
    Config,
    ConfigChange,
    ConfigFields,
    ConfigKind,
    Watcher,
)
from config_service.configs.packages import IncomingFile
from config_service.configs.service import ConfigService, ImportResult
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared.auth.identity import current
from shared.bundle.validate import BundleSummary, Severity, Violation
from shared.errors import FieldViolation, InvalidArgument
from shared.identifiers import MAX_TAGS
from shared.lru import Lru
from shared.rpc.context import Context
from shared.rpc.convert import struct_to_python, timestamp
from shared.rpc.fields import StructLimits, check_count, check_struct, required
from shared.tenancy import caller_tenant
from shared.visibility import Visibility

SERVICE_NAME: str = config_service_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name

_SEVERITY = {
    Severity.ERROR: config_pb2.SEVERITY_ERROR,
    Severity.WARNING: config_pb2.SEVERITY_WARNING,
}
_KIND = {
    ConfigKind.BUNDLE: config_pb2.CONFIG_KIND_BUNDLE,
    ConfigKind.AGENT: config_pb2.CONFIG_KIND_AGENT,
    ConfigKind.CONTEXT: config_pb2.CONFIG_KIND_CONTEXT,
}
VISIBILITY_PB = {
    Visibility.PRIVATE: config_pb2.VISIBILITY_PRIVATE,
    Visibility.TEAM: config_pb2.VISIBILITY_TEAM,
    Visibility.ORG: config_pb2.VISIBILITY_ORG,
}
_VISIBILITY: dict[int, Visibility] = {int(n): v for v, n in VISIBILITY_PB.items()}
_CHANGE = {
    ChangeType.CREATED: config_pb2.CHANGE_TYPE_CREATED,
    ChangeType.UPDATED: config_pb2.CHANGE_TYPE_UPDATED,
    ChangeType.DELETED: config_pb2.CHANGE_TYPE_DELETED,
}


def summary_pb(summary: BundleSummary) -> config_pb2.BundleSummary:
    """Domain summary → wire."""
    return config_pb2.BundleSummary(
        name=summary.name,
        version=summary.version,
        description=summary.description,
        providers=summary.providers,
        tools=summary.tools,
        hooks=summary.hooks,
        includes=summary.includes,
        orchestrator=summary.orchestrator,
        context=summary.context,
        has_instruction=summary.has_instruction,
    )


def violation_pb(violation: Violation) -> config_pb2.Violation:
    """Domain violation → wire."""
    return config_pb2.Violation(
        field=violation.field,
        line=violation.line,
        column=violation.column,
        message=violation.message,
        severity=_SEVERITY[violation.severity],
    )


WIRE_MEMO_SIZE = 1024


def config_pb(config: Config, full: bool = True) -> config_pb2.Config:
    """Domain config → wire; BASIC leaves out the document."""
    return config_pb2.Config(
        config_id=config.config_id,
        name=config.name,
        description=config.description,
        yaml_content=config.yaml_content if full else "",
        tags=dict(config.tags),
        revision=config.revision,
        etag=config.etag,
        create_time=timestamp(config.create_time),
        update_time=timestamp(config.update_time),
        summary=summary_pb(config.summary),
        kind=_KIND[config.kind],
        namespace=config.namespace,
        path=config.path,
        source_uri=config.source_uri,
        warnings=[violation_pb(v) for v in config.warnings],
        owner=config.owner,
        visibility=VISIBILITY_PB[config.visibility],
        team=config.team,
    )


def import_pb(result: ImportResult) -> config_service_pb2.ImportBundleResponse:
    """Domain import result → wire; the files in the BASIC view."""
    return config_service_pb2.ImportBundleResponse(
        namespace=result.namespace,
        configs=[config_pb(c, full=False) for c in result.configs],
        warnings=[violation_pb(v) for v in result.warnings],
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
        deleted=result.deleted,
    )


def change_pb(change: ConfigChange) -> config_pb2.ConfigChange:
    """Domain change → wire."""
    return config_pb2.ConfigChange(
        sequence=change.sequence,
        type=_CHANGE[change.type],
        config_id=change.config_id,
        revision=change.revision,
        etag=change.etag,
        name=change.name,
        change_time=timestamp(change.change_time),
    )


# One module's settings: far above any real module's, far below what would stall an edit.
MODULE_CONFIG_LIMITS = StructLimits(max_bytes=64 * 1024, max_entries=4_096, max_depth=16)
MAX_UPDATE_PATHS = 16


def visibility_of(number: int, field: str) -> Visibility | None:
    """A requested visibility; None when unspecified, INVALID_ARGUMENT when unknown."""
    if number == config_pb2.VISIBILITY_UNSPECIFIED:
        return None
    if number not in _VISIBILITY:
        raise InvalidArgument(
            f"{field} must be VISIBILITY_PRIVATE, VISIBILITY_TEAM or VISIBILITY_ORG.",
            reason="INVALID_VISIBILITY",
            violations=[FieldViolation(field, f"unknown value {number}")],
        )
    return _VISIBILITY[number]


def _fields(config: config_pb2.Config) -> ConfigFields:
    check_count(config.tags, "config.tags", MAX_TAGS, "tags")
    return ConfigFields(
        name=config.name,
        description=config.description,
        yaml_content=config.yaml_content,
        tags=dict(config.tags),
        visibility=visibility_of(config.visibility, "config.visibility"),
    )


def _full(view: int, default_full: bool) -> bool:
    if view == config_pb2.CONFIG_VIEW_UNSPECIFIED:
        return default_full
    return bool(view == config_pb2.CONFIG_VIEW_FULL)


class ConfigServicer(config_service_pb2_grpc.ConfigServiceServicer):
    """Maps ConfigService RPCs onto the config domain."""

    def __init__(self, service: ConfigService) -> None:
        self._service = service
        # The wire form of configs the service hands out again (its cache returns the same
        # object until the config changes): built once, not on every GetConfig.
        self._wire: Lru[int, tuple[Config, config_pb2.Config]] = Lru(WIRE_MEMO_SIZE)

    def _config_pb(self, config: Config) -> config_pb2.Config:
        held = self._wire.get(id(config))
        if held is not None and held[0] is config:
            return held[1]
        message = config_pb(config)
        self._wire.put(id(config), (config, message))
        return message

    async def CreateConfig(
        self, request: config_service_pb2.CreateConfigRequest, context: Context
    ) -> config_pb2.Config:
        created = await self._service.create(
            caller_tenant(),
            _fields(request.config),
            config_id=request.config_id or request.config.config_id,
            request_id=request.request_id,
            validate_only=request.validate_only,
        )
        return config_pb(created)

    async def GetConfig(
        self, request: config_service_pb2.GetConfigRequest, context: Context
    ) -> config_pb2.Config:
        config_id = required(request.config_id, "config_id")
        return self._config_pb(
            await self._service.get(caller_tenant(), config_id, request.revision)
        )

    async def ListConfigs(
        self, request: config_service_pb2.ListConfigsRequest, context: Context
    ) -> config_service_pb2.ListConfigsResponse:
        page = await self._service.list_configs(
            caller_tenant(), request.filter, request.page_size, request.page_token
        )
        full = _full(request.view, default_full=False)
        return config_service_pb2.ListConfigsResponse(
            configs=[config_pb(c, full) for c in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def UpdateConfig(
        self, request: config_service_pb2.UpdateConfigRequest, context: Context
    ) -> config_pb2.Config:
        config_id = required(request.config.config_id, "config.config_id")
        check_count(request.update_mask.paths, "update_mask.paths", MAX_UPDATE_PATHS, "paths")
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else None
        updated = await self._service.update(
            caller_tenant(),
            config_id,
            _fields(request.config),
            paths,
            etag=request.config.etag,
            validate_only=request.validate_only,
        )
        return config_pb(updated)

    async def DeleteConfig(
        self, request: config_service_pb2.DeleteConfigRequest, context: Context
    ) -> empty_pb2.Empty:
        config_id = required(request.config_id, "config_id")
        await self._service.delete(caller_tenant(), config_id, request.etag)
        return empty_pb2.Empty()

    async def ValidateConfig(
        self, request: config_service_pb2.ValidateConfigRequest, context: Context
    ) -> config_service_pb2.ValidateConfigResponse:
        result = await self._service.validate(caller_tenant(), request.yaml_content)
        return config_service_pb2.ValidateConfigResponse(
            valid=result.valid,
            violations=[violation_pb(v) for v in result.violations],
            summary=summary_pb(result.summary),
        )

    async def ListConfigRevisions(
        self, request: config_service_pb2.ListConfigRevisionsRequest, context: Context
    ) -> config_service_pb2.ListConfigRevisionsResponse:
        config_id = required(request.config_id, "config_id")
        page = await self._service.list_revisions(
            caller_tenant(), config_id, request.page_size, request.page_token
        )
        full = _full(request.view, default_full=False)
        return config_service_pb2.ListConfigRevisionsResponse(
            revisions=[config_pb(c, full) for c in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def RollbackConfig(
        self, request: config_service_pb2.RollbackConfigRequest, context: Context
    ) -> config_pb2.Config:
        config_id = required(request.config_id, "config_id")
        restored = await self._service.rollback(
            caller_tenant(), config_id, request.revision, request.etag
        )
        return config_pb(restored)

    async def _add_module(
        self,
        kind: str,
        request: config_service_pb2.AddToolRequest | config_service_pb2.AddProviderRequest,
        context: Context,
    ) -> config_pb2.Config:
        config_id = required(request.config_id, "config_id")
        module = required(request.module, "module")
        settings = None
        if request.HasField("config"):
            check_struct(request.config, "config", MODULE_CONFIG_LIMITS)
            settings = struct_to_python(request.config)
        source = request.source or None
        edited = await self._service.edit(
            caller_tenant(),
            config_id,
            request.etag,
            AddModule(kind, module, source, settings),
        )
        return config_pb(edited)

    async def _remove_module(
        self,
        kind: str,
        request: config_service_pb2.RemoveToolRequest | config_service_pb2.RemoveProviderRequest,
        context: Context,
    ) -> config_pb2.Config:
        config_id = required(request.config_id, "config_id")
        module = required(request.module, "module")
        edited = await self._service.edit(
            caller_tenant(),
            config_id,
            request.etag,
            RemoveModule(kind, module),
        )
        return config_pb(edited)

    async def AddTool(
        self, request: config_service_pb2.AddToolRequest, context: Context
    ) -> config_pb2.Config:
        return await self._add_module("tools", request, context)

    async def AddProvider(
        self, request: config_service_pb2.AddProviderRequest, context: Context
    ) -> config_pb2.Config:
        return await self._add_module("providers", request, context)

    async def RemoveTool(
        self, request: config_service_pb2.RemoveToolRequest, context: Context
    ) -> config_pb2.Config:
        return await self._remove_module("tools", request, context)

    async def RemoveProvider(
        self, request: config_service_pb2.RemoveProviderRequest, context: Context
    ) -> config_pb2.Config:
        return await self._remove_module("providers", request, context)

    async def AddInclude(
        self, request: config_service_pb2.AddIncludeRequest, context: Context
    ) -> config_pb2.Config:
        config_id = required(request.config_id, "config_id")
        bundle = required(request.bundle, "bundle")
        edited = await self._service.edit(
            caller_tenant(),
            config_id,
            request.etag,
            AddInclude(bundle),
        )
        return config_pb(edited)

    async def RemoveInclude(
        self, request: config_service_pb2.RemoveIncludeRequest, context: Context
    ) -> config_pb2.Config:
        config_id = required(request.config_id, "config_id")
        bundle = required(request.bundle, "bundle")
        edited = await self._service.edit(
            caller_tenant(),
            config_id,
            request.etag,
            RemoveInclude(bundle),
        )
        return config_pb(edited)

    async def ImportBundle(
        self, request: config_service_pb2.ImportBundleRequest, context: Context
    ) -> config_service_pb2.ImportBundleResponse:
        result = await self._service.import_bundle(
            caller_tenant(),
            [IncomingFile(f.path, f.content) for f in request.files],
            source_uri=request.source_uri,
            request_id=request.request_id,
            validate_only=request.validate_only,
        )
        return import_pb(result)

    async def WatchConfigs(
        self, request: config_service_pb2.WatchConfigsRequest, context: Context
    ) -> AsyncIterator[config_pb2.ConfigChange]:
        caller = current()
        watch = await self._service.open_watch(
            Watcher(caller.tenant_id, service=caller.service), request.after_sequence
        )
        # Headers now, so a client knows the stream is established before any change arrives.
        await context.send_initial_metadata(())
        async for change in self._service.follow(watch):
            yield change_pb(change)
