"""The service config of channels between the services."""

from __future__ import annotations

import json

from shared.rpc.channel import RECONNECT_BACKOFF, service_config


def test_only_unavailable_is_retried_and_calls_spread_round_robin() -> None:
    config = json.loads(service_config("tandem.config.v1.ConfigService"))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    assert method["name"] == [{"service": "tandem.config.v1.ConfigService"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] > 1


def test_a_lost_peer_is_retried_within_a_second() -> None:
    backoff = dict(RECONNECT_BACKOFF)
    assert backoff["grpc.max_reconnect_backoff_ms"] <= 1000
    assert backoff["grpc.initial_reconnect_backoff_ms"] <= backoff["grpc.max_reconnect_backoff_ms"]
