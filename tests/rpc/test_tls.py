"""Mutual TLS on ConfigService and on SessionService's channel to it, with a throwaway CA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from session_service import app as session_app
from session_service.settings import SessionServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.rpc.tls import channel_credentials
from tests.rpc.test_turns import bundle
from tests.support.certs import Authority


async def test_mtls_accepts_the_right_client_certificate_and_refuses_others(
    tmp_path: Path,
) -> None:
    ca = Authority(tmp_path, "tandem")
    rogue = Authority(tmp_path, "rogue")
    server = ca.issue("config-service", server=True)
    client = ca.issue("session-service", server=False)
    stranger = rogue.issue("session-service", server=False)
    config = await config_app.build(
        ConfigServiceSettings(
            database_url=f"sqlite:///{tmp_path / 'c.db'}",
            config_service_listen="127.0.0.1:0",
            tls_cert_file=str(server.cert),
            tls_key_file=str(server.key),
            tls_client_ca_file=str(ca.ca_file),
        )
    )
    await config.start()
    address = f"localhost:{config.server.port}"
    try:
        good = channel_credentials(str(ca.ca_file), str(client.cert), str(client.key))
        async with grpc.aio.secure_channel(address, good) as channel:
            stub = config_service_pb2_grpc.ConfigServiceStub(channel)
            created = await stub.CreateConfig(
                config_service_pb2.CreateConfigRequest(
                    config_id="tls", config=config_pb2.Config(name="tls", yaml_content=bundle({}))
                )
            )
            assert created.config_id == "tls"

        refused = [
            channel_credentials(str(ca.ca_file), str(stranger.cert), str(stranger.key)),
            channel_credentials(str(ca.ca_file)),  # no client certificate at all
        ]
        for credentials in refused:
            async with grpc.aio.secure_channel(address, credentials) as channel:
                stub = config_service_pb2_grpc.ConfigServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetConfig(
                        config_service_pb2.GetConfigRequest(config_id="tls"), timeout=5
                    )
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        # Plaintext does not get through either.
        async with grpc.aio.insecure_channel(address) as channel:
            stub = config_service_pb2_grpc.ConfigServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetConfig(
                    config_service_pb2.GetConfigRequest(config_id="tls"), timeout=5
                )
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

        # SessionService reaches ConfigService over mutual TLS with its own certificate.
        session, parts = await session_app.build_with_parts(
            SessionServiceSettings(
                database_url=f"sqlite:///{tmp_path / 's.db'}",
                session_service_listen="127.0.0.1:0",
                config_service_target=address,
                config_service_tls_ca_file=str(ca.ca_file),
                config_service_tls_cert_file=str(client.cert),
                config_service_tls_key_file=str(client.key),
                config_watch_retry_seconds=0.2,
            )
        )
        await session.start()
        try:
            await asyncio.wait_for(parts.watcher.connected.wait(), timeout=10)
            async with grpc.aio.insecure_channel(session.server.address) as channel:
                sessions = session_service_pb2_grpc.SessionServiceStub(channel)
                made = await sessions.CreateSession(
                    session_service_pb2.CreateSessionRequest(config_id="tls")
                )
                assert made.config_revision == 1
        finally:
            await session.stop(0)
    finally:
        await config.stop(0)
