"""Channels, credentials, deadlines and retries shared by every call of the async client.

Private to the package. Reads no config keys: everything comes from AsyncTandem's arguments.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc

from shared._generated.tandem.config.v1 import config_service_pb2_grpc
from shared._generated.tandem.session.v1 import session_service_pb2_grpc
from tandem_client.errors import Unavailable, error_from_rpc

R = TypeVar("R")

Metadata = tuple[tuple[str, str], ...]

# Backoff between attempts when the server sends no RetryInfo: 0.2s, 0.4s, 0.8s ... 5s.
_FIRST_DELAY = 0.2
_MAX_DELAY = 5.0


def new_request_id() -> str:
    """A fresh request id, so the server can recognise a retry of the same logical call."""
    return str(uuid.uuid4())


def backoff(attempt: int, hint: float | None) -> float:
    """Seconds to wait before retry `attempt` (1-based); the server's RetryInfo wins."""
    if hint is not None and hint > 0:
        return min(hint, 60.0)
    delay = min(_FIRST_DELAY * 2 ** (attempt - 1), _MAX_DELAY)
    # Jitter, so clients cut off together do not come back together.
    return float(delay * random.uniform(0.5, 1.0))


class Transport:
    """The channels to ConfigService and SessionService, opened on first use."""

    def __init__(
        self,
        config_target: str,
        session_target: str,
        *,
        api_key: str | None,
        tls: bool,
        ca_file: str | Path | None,
        cert_file: str | Path | None,
        key_file: str | Path | None,
        timeout: float | None,
        retries: int,
    ) -> None:
        self.config_target = config_target
        self.session_target = session_target
        self.timeout = timeout
        self.retries = max(0, retries)
        self.metadata: Metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._credentials: grpc.ChannelCredentials | None = None
        if tls or ca_file or cert_file or key_file:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file),
                private_key=_read(key_file),
                certificate_chain=_read(cert_file),
            )
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._configs: config_service_pb2_grpc.ConfigServiceAsyncStub | None = None
        self._sessions: session_service_pb2_grpc.SessionServiceAsyncStub | None = None
        self.closed = False

    def _channel(self, target: str) -> grpc.aio.Channel:
        if self.closed:
            raise RuntimeError("the Tandem client is closed")
        channel = self._channels.get(target)
        if channel is None:
            # Opened lazily: an asyncio channel belongs to the loop that is running now.
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(target, self._credentials)
            else:
                channel = grpc.aio.insecure_channel(target)
            self._channels[target] = channel
        return channel

    @property
    def configs(self) -> config_service_pb2_grpc.ConfigServiceAsyncStub:
        """The ConfigService stub."""
        if self._configs is None:
            self._configs = config_service_pb2_grpc.ConfigServiceStub(
                self._channel(self.config_target)
            )
        return self._configs

    @property
    def sessions(self) -> session_service_pb2_grpc.SessionServiceAsyncStub:
        """The SessionService stub."""
        if self._sessions is None:
            self._sessions = session_service_pb2_grpc.SessionServiceStub(
                self._channel(self.session_target)
            )
        return self._sessions

    async def unary(
        self, call: Callable[[float | None, Metadata], Awaitable[R]], *, retry: bool
    ) -> R:
        """Runs a unary call, raising TandemError; retries UNAVAILABLE when retry is set."""
        attempt = 0
        while True:
            try:
                return await call(self.timeout, self.metadata)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
            attempt += 1
            if not (retry and isinstance(error, Unavailable) and attempt <= self.retries):
                raise error
            await asyncio.sleep(backoff(attempt, error.retry_delay))

    async def close(self) -> None:
        """Closes the channels; calls still running are cancelled."""
        self.closed = True
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


__all__ = ["Metadata", "Transport", "backoff", "new_request_id"]
