"""gRPC servicer for tandem.config.v1.ConfigService: translation only.

Each RPC answers UNIMPLEMENTED, with an ErrorInfo naming it, until its issue lands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from google.protobuf import empty_pb2

from config_service.storage.uow import ConfigUnitOfWork
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared.rpc.context import Context
from shared.rpc.status import not_implemented

SERVICE_NAME: str = config_service_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name


class ConfigServicer(config_service_pb2_grpc.ConfigServiceServicer):
    """Maps ConfigService RPCs onto the domain."""

    def __init__(self, unit_of_work: Callable[[], ConfigUnitOfWork]) -> None:
        self._unit_of_work = unit_of_work

    async def CreateConfig(
        self, request: config_service_pb2.CreateConfigRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.CreateConfig")

    async def GetConfig(
        self, request: config_service_pb2.GetConfigRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.GetConfig")

    async def ListConfigs(
        self, request: config_service_pb2.ListConfigsRequest, context: Context
    ) -> config_service_pb2.ListConfigsResponse:
        raise not_implemented("ConfigService.ListConfigs")

    async def UpdateConfig(
        self, request: config_service_pb2.UpdateConfigRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.UpdateConfig")

    async def DeleteConfig(
        self, request: config_service_pb2.DeleteConfigRequest, context: Context
    ) -> empty_pb2.Empty:
        raise not_implemented("ConfigService.DeleteConfig")

    async def ValidateConfig(
        self, request: config_service_pb2.ValidateConfigRequest, context: Context
    ) -> config_service_pb2.ValidateConfigResponse:
        raise not_implemented("ConfigService.ValidateConfig")

    async def ListConfigRevisions(
        self, request: config_service_pb2.ListConfigRevisionsRequest, context: Context
    ) -> config_service_pb2.ListConfigRevisionsResponse:
        raise not_implemented("ConfigService.ListConfigRevisions")

    async def RollbackConfig(
        self, request: config_service_pb2.RollbackConfigRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.RollbackConfig")

    async def AddTool(
        self, request: config_service_pb2.AddToolRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.AddTool")

    async def AddProvider(
        self, request: config_service_pb2.AddProviderRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.AddProvider")

    async def AddInclude(
        self, request: config_service_pb2.AddIncludeRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.AddInclude")

    async def RemoveTool(
        self, request: config_service_pb2.RemoveToolRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.RemoveTool")

    async def RemoveProvider(
        self, request: config_service_pb2.RemoveProviderRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.RemoveProvider")

    async def RemoveInclude(
        self, request: config_service_pb2.RemoveIncludeRequest, context: Context
    ) -> config_pb2.Config:
        raise not_implemented("ConfigService.RemoveInclude")

    def WatchConfigs(
        self, request: config_service_pb2.WatchConfigsRequest, context: Context
    ) -> AsyncIterator[config_pb2.ConfigChange]:
        raise not_implemented("ConfigService.WatchConfigs")
