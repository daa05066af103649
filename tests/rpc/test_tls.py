"""Mutual TLS on ConfigService and on SessionService's channel to it, with a throwaway CA."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from config_service import app as config_app
from config_service.settings import ConfigServiceSettings
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from shared.rpc.tls import channel_credentials
from tests.support.certs import Authority
from tests.support.pair import running_session_service
from tests.support.turns import bundle


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
        async with (
            running_session_service(
                f"sqlite:///{tmp_path / 's.db'}",
                address,
                config_service_tls_ca_file=str(ca.ca_file),
                config_service_tls_cert_file=str(client.cert),
                config_service_tls_key_file=str(client.key),
            ) as session,
            grpc.aio.insecure_channel(session.server.address) as channel,
        ):
            sessions = session_service_pb2_grpc.SessionServiceStub(channel)
            made = await sessions.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="tls")
            )
            assert made.config_revision == 1
    finally:
        await config.stop(0)
