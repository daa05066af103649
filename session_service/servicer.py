"""gRPC servicer for tandem.session.v1.SessionService: translation only.

Each RPC answers UNIMPLEMENTED, with an ErrorInfo naming it, until its issue lands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from google.protobuf import empty_pb2

from session_service.storage.uow import SessionUnitOfWork
from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared._generated.tandem.session.v1 import (
    events_pb2,
    session_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from shared.rpc.context import Context
from shared.rpc.status import not_implemented

SERVICE_NAME: str = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name


class SessionServicer(session_service_pb2_grpc.SessionServiceServicer):
    """Maps SessionService RPCs onto the domain."""

    def __init__(
        self,
        unit_of_work: Callable[[], SessionUnitOfWork],
        configs: config_service_pb2_grpc.ConfigServiceStub,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._configs = configs

    async def CreateSession(
        self, request: session_service_pb2.CreateSessionRequest, context: Context
    ) -> session_pb2.Session:
        raise not_implemented("SessionService.CreateSession")

    async def GetSession(
        self, request: session_service_pb2.GetSessionRequest, context: Context
    ) -> session_pb2.Session:
        raise not_implemented("SessionService.GetSession")

    async def ListSessions(
        self, request: session_service_pb2.ListSessionsRequest, context: Context
    ) -> session_service_pb2.ListSessionsResponse:
        raise not_implemented("SessionService.ListSessions")

    async def DeleteSession(
        self, request: session_service_pb2.DeleteSessionRequest, context: Context
    ) -> empty_pb2.Empty:
        raise not_implemented("SessionService.DeleteSession")

    async def StartSession(
        self, request: session_service_pb2.StartSessionRequest, context: Context
    ) -> session_pb2.Session:
        raise not_implemented("SessionService.StartSession")

    async def CompleteSession(
        self, request: session_service_pb2.CompleteSessionRequest, context: Context
    ) -> session_pb2.Session:
        raise not_implemented("SessionService.CompleteSession")

    async def FailSession(
        self, request: session_service_pb2.FailSessionRequest, context: Context
    ) -> session_pb2.Session:
        raise not_implemented("SessionService.FailSession")

    async def TerminateSession(
        self, request: session_service_pb2.TerminateSessionRequest, context: Context
    ) -> session_pb2.Session:
        raise not_implemented("SessionService.TerminateSession")

    async def ResumeSession(
        self, request: session_service_pb2.ResumeSessionRequest, context: Context
    ) -> session_pb2.Session:
        raise not_implemented("SessionService.ResumeSession")

    async def AppendMessage(
        self, request: session_service_pb2.AppendMessageRequest, context: Context
    ) -> session_pb2.Message:
        raise not_implemented("SessionService.AppendMessage")

    async def ListMessages(
        self, request: session_service_pb2.ListMessagesRequest, context: Context
    ) -> session_service_pb2.ListMessagesResponse:
        raise not_implemented("SessionService.ListMessages")

    def SendMessage(
        self, request: session_service_pb2.SendMessageRequest, context: Context
    ) -> AsyncIterator[events_pb2.SessionEvent]:
        raise not_implemented("SessionService.SendMessage")

    def StreamEvents(
        self, request: session_service_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[events_pb2.SessionEvent]:
        raise not_implemented("SessionService.StreamEvents")

    async def CancelTurn(
        self, request: session_service_pb2.CancelTurnRequest, context: Context
    ) -> session_service_pb2.CancelTurnResponse:
        raise not_implemented("SessionService.CancelTurn")

    async def PrepareConfig(
        self, request: session_service_pb2.PrepareConfigRequest, context: Context
    ) -> session_service_pb2.PrepareConfigResponse:
        raise not_implemented("SessionService.PrepareConfig")
