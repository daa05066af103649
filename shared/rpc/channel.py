"""Client channels between Tandem services."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from shared.rpc.server import ServerOptions

# Only UNAVAILABLE is retried: anything else may have had an effect, or will fail again.
_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


# How soon a channel tries again after its peer went away. gRPC's defaults (1 s, growing by
# 1.6 up to 120 s) left SessionService answering UNAVAILABLE for 6-7 s after a restarted
# ConfigService was back. Between services on one network a reconnect attempt every second
# at most costs nothing, and a restarted peer is found within about a second.
RECONNECT_BACKOFF: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def service_config(service_name: str) -> str:
    """The channel's service config: round_robin across resolved addresses, retry on UNAVAILABLE."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{"name": [{"service": service_name}], "retryPolicy": _RETRY_POLICY}],
        }
    )


def service_channel(
    target: str,
    service_name: str,
    options: ServerOptions,
    interceptors: Sequence[Any] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel to target (for example `dns:///config:50051`) for calls to service_name.

    With credentials it is TLS (mutual TLS when they hold a client certificate).
    """
    args = [
        *options.channel_args(),
        ("grpc.service_config", service_config(service_name)),
        ("grpc.enable_retries", 1),
        *RECONNECT_BACKOFF,
    ]
    if credentials is not None:
        return grpc.aio.secure_channel(
            target, credentials, options=args, interceptors=list(interceptors) or None
        )
    return grpc.aio.insecure_channel(target, options=args, interceptors=list(interceptors) or None)
