"""Typed settings from TANDEM_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config_service.settings import ConfigServiceSettings
from session_service.settings import SessionServiceSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TANDEM_DATABASE_URL",
        "TANDEM_CONFIG_SERVICE_LISTEN",
        "TANDEM_SESSION_SERVICE_LISTEN",
        "TANDEM_CONFIG_SERVICE_TARGET",
        "TANDEM_MAX_RECEIVE_MESSAGE_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_embedded_ones() -> None:
    config = ConfigServiceSettings()
    session = SessionServiceSettings()
    assert config.config_service_listen == "127.0.0.1:50051"
    assert session.session_service_listen == "127.0.0.1:50052"
    assert session.config_service_target == "127.0.0.1:50051"
    # Each service keeps its own tables in its own embedded file.
    assert config.database == "sqlite:///tandem-config.db"
    assert session.database == "sqlite:///tandem-session.db"


def test_variables_with_the_tandem_prefix_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_DATABASE_URL", "postgresql+psycopg://db/tandem")
    monkeypatch.setenv("TANDEM_CONFIG_SERVICE_TARGET", "dns:///config:50051")
    monkeypatch.setenv("TANDEM_SESSION_SERVICE_LISTEN", "0.0.0.0:6000")
    monkeypatch.setenv("TANDEM_MAX_RECEIVE_MESSAGE_BYTES", "1024")
    settings = SessionServiceSettings()
    assert settings.database == "postgresql+psycopg://db/tandem"
    assert settings.config_service_target == "dns:///config:50051"
    assert settings.session_service_listen == "0.0.0.0:6000"
    assert settings.server_options().max_receive_message_bytes == 1024


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://elsewhere/x")
    assert ConfigServiceSettings().database == "sqlite:///tandem-config.db"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_MAX_RECEIVE_MESSAGE_BYTES", "-5")
    with pytest.raises(ValidationError, match="max_receive_message_bytes"):
        ConfigServiceSettings()


def test_server_options_set_message_limits_explicitly() -> None:
    args = dict(ConfigServiceSettings(max_send_message_bytes=2048).server_options().channel_args())
    assert args["grpc.max_send_message_length"] == 2048
    assert args["grpc.max_receive_message_length"] == 16 * 1024 * 1024


def test_connection_age_reaches_the_server_options_only_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = dict(ConfigServiceSettings().server_options().server_args())
    assert "grpc.max_connection_age_ms" not in default
    monkeypatch.setenv("TANDEM_MAX_CONNECTION_AGE_SECONDS", "300")
    monkeypatch.setenv("TANDEM_MAX_CONNECTION_AGE_GRACE_SECONDS", "30")
    options = SessionServiceSettings().server_options()
    server = dict(options.server_args())
    assert server["grpc.max_connection_age_ms"] == 300_000
    assert server["grpc.max_connection_age_grace_ms"] == 30_000
    # Clients do not get server-only arguments.
    assert "grpc.max_connection_age_ms" not in dict(options.channel_args())


def test_log_format_is_one_of_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        ConfigServiceSettings()


def test_a_tls_certificate_without_its_key_is_refused_at_start(tmp_path: Path) -> None:
    settings = ConfigServiceSettings(tls_cert_file=str(tmp_path / "cert.pem"))
    with pytest.raises(ValueError, match="go together"):
        settings.server_credentials()
    assert ConfigServiceSettings().server_credentials() is None
    assert SessionServiceSettings().config_channel_credentials() is None
