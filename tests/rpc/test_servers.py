"""Both servers in process: health, reflection, UNIMPLEMENTED with rich status, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.app import ServiceApp
from tests.support.rpc import error_info, rich_status

CONFIG = config_service_pb2.DESCRIPTOR.services_by_name["ConfigService"]
SESSION = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def check(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


async def listed_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request])):
        return {s.name for s in response.list_services_response.service}
    raise AssertionError("reflection sent no response")


async def test_config_service_reports_serving(config_channel: grpc.aio.Channel) -> None:
    assert await check(config_channel, "") == SERVING
    assert await check(config_channel, CONFIG.full_name) == SERVING


async def test_session_service_reports_serving(session_channel: grpc.aio.Channel) -> None:
    assert await check(session_channel, "") == SERVING
    assert await check(session_channel, SESSION.full_name) == SERVING


async def test_health_of_an_unknown_service_is_not_found(
    config_channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(config_channel, "tandem.nothing.v1.Nothing")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_each_service_health_and_reflection(
    config_channel: grpc.aio.Channel, session_channel: grpc.aio.Channel
) -> None:
    common = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    assert await listed_services(config_channel) == common | {CONFIG.full_name}
    assert await listed_services(session_channel) == common | {SESSION.full_name}


async def test_reflection_serves_the_contract(config_channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(config_channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=CONFIG.full_name)
    async for response in stub.ServerReflectionInfo(iter([request])):
        names = set()
        for raw in response.file_descriptor_response.file_descriptor_proto:
            from google.protobuf import descriptor_pb2

            names.add(descriptor_pb2.FileDescriptorProto.FromString(raw).name)
        assert "tandem/config/v1/config_service.proto" in names
        return
    raise AssertionError("reflection sent no response")


async def call(stub: Any, method: descriptor.MethodDescriptor) -> None:
    request_type = getattr(
        config_service_pb2 if method.containing_service is CONFIG else session_service_pb2,
        method.input_type.name,
    )
    rpc = getattr(stub, method.name)
    if method.server_streaming:
        async for _ in rpc(request_type(), timeout=1):
            pass
    else:
        await rpc(request_type(), timeout=5)


@pytest.mark.parametrize(
    "method", [*CONFIG.methods, *SESSION.methods], ids=lambda m: m.full_name.split(".", 3)[-1]
)
async def test_every_rpc_answers_an_empty_request_with_a_definite_status(
    config_stub: config_service_pb2_grpc.ConfigServiceAsyncStub,
    session_stub: session_service_pb2_grpc.SessionServiceAsyncStub,
    method: descriptor.MethodDescriptor,
) -> None:
    stub = config_stub if method.containing_service is CONFIG else session_stub
    try:
        await call(stub, method)
    except grpc.aio.AioRpcError as exc:
        error = exc
    else:
        return
    if method.server_streaming and error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
        return  # an open stream with nothing to send yet, ended by our own deadline
    # A client can act on every failure: never UNKNOWN or INTERNAL, always ErrorInfo.
    assert error.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
    info = error_info(error)
    assert info.domain == "tandem.dev"
    assert info.reason.isupper()
    assert rich_status(error).code == error.code().value[0]


async def test_health_turns_not_serving_before_the_server_stops(
    config_service: ServiceApp, config_channel: grpc.aio.Channel
) -> None:
    stub = health_pb2_grpc.HealthStub(config_channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=CONFIG.full_name))
    assert (await watch.read()).status == SERVING
    stopping = asyncio.create_task(config_service.server.stop(grace=5))
    update = await asyncio.wait_for(watch.read(), timeout=5)
    assert update.status == NOT_SERVING
    watch.cancel()
    await stopping


async def test_oversized_requests_are_refused(sqlite_url: str) -> None:
    settings = ConfigServiceSettings(
        database_url=sqlite_url,
        config_service_listen="127.0.0.1:0",
        max_receive_message_bytes=16 * 1024,
    )
    service = await config_app.build(settings)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.server.address) as channel:
            stub = config_service_pb2_grpc.ConfigServiceStub(channel)
            huge = config_pb2.Config(yaml_content="x" * (64 * 1024))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateConfig(config_service_pb2.CreateConfigRequest(config=huge))
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            # The server is still healthy after refusing it.
            assert await check(channel, "") == SERVING
    finally:
        await service.stop(0)
