"""Per-tenant limits: the token bucket, the count check, and tenants' entries in the key list."""

from __future__ import annotations

import pytest

from config_service.settings import ConfigServiceSettings
from shared.auth.keys import KeyFileError, parse_keys
from shared.errors import ResourceExhausted
from shared.quotas import Bucket, Quotas, TenantPolicy, check_count, take_token


def test_a_fresh_bucket_allows_the_burst_then_refuses_with_the_wait() -> None:
    bucket = None
    for _ in range(3):
        bucket, wait = take_token(bucket, 100.0, per_minute=60, burst=3)
        assert wait == 0
    assert bucket is not None
    bucket, wait = take_token(bucket, 100.0, per_minute=60, burst=3)
    assert wait == pytest.approx(1.0)
    # Half a second later half a token has come back: half a second to go.
    bucket, wait = take_token(bucket, 100.5, per_minute=60, burst=3)
    assert wait == pytest.approx(0.5)
    bucket, wait = take_token(bucket, 101.0, per_minute=60, burst=3)
    assert wait == 0


def test_a_bucket_refills_only_to_its_burst() -> None:
    bucket, _ = take_token(Bucket(0.0, 0.0), 3600.0, per_minute=60, burst=5)
    assert bucket.tokens == pytest.approx(4.0)


def test_no_burst_means_a_minute_worth() -> None:
    bucket, wait = take_token(None, 0.0, per_minute=120, burst=0)
    assert (bucket.tokens, wait) == (119.0, 0.0)


def test_a_clock_that_steps_back_refills_nothing() -> None:
    bucket, wait = take_token(Bucket(0.5, 100.0), 90.0, per_minute=60, burst=3)
    assert wait == pytest.approx(0.5)
    assert bucket.tokens == pytest.approx(0.5)
    assert bucket.at == 100.0


def test_check_count_refuses_at_the_limit_with_a_quota_failure() -> None:
    check_count("t", "configs", 2, 3, "delete some.")
    check_count("t", "configs", 10**6, 0, "unlimited")
    with pytest.raises(ResourceExhausted) as caught:
        check_count("t", "configs", 3, 3, "delete some.")
    error = caught.value
    assert error.reason == "QUOTA_EXCEEDED"
    assert dict(error.metadata) == {"quota": "configs", "limit": "3", "used": "3"}
    [violation] = error.violations
    assert (violation.subject, violation.description) == ("tenant:t", "configs: 3 of 3 used")


DEFAULTS = TenantPolicy(Quotas(configs=10, sessions=20, concurrent_turns=3))


def test_a_tenant_entry_overrides_only_what_it_names() -> None:
    parsed = parse_keys(
        "keys: []\ntenants:\n  team-a:\n    allow_literal_secrets: true\n"
        "    quotas: {configs: 500}\n",
        "keys.yaml",
        DEFAULTS,
    )
    policy = parsed.tenants["team-a"]
    assert policy.allow_literal_secrets is True
    assert policy.quotas == Quotas(configs=500, sessions=20, concurrent_turns=3)


def test_a_tenant_may_have_its_own_session_ttl_ceiling() -> None:
    parsed = parse_keys(
        "keys: []\ntenants:\n  team-a:\n    quotas: {session_ttl_max_seconds: 3600}\n",
        "keys.yaml",
        DEFAULTS,
    )
    assert parsed.tenants["team-a"].quotas.session_ttl_max_seconds == 3600
    assert ConfigServiceSettings(quota_session_ttl_max_seconds=60).tenant_defaults().quotas == (
        Quotas(
            configs=10_000,
            sessions=100_000,
            concurrent_turns=64,
            send_messages_per_minute=600,
            session_ttl_max_seconds=60,
        )
    )


@pytest.mark.parametrize(
    ("tenants", "where"),
    [
        ("[a, b]", "'tenants' must map"),
        ("{team-a: 3}", "tenants.team-a: expected a mapping"),
        ("{team-a: {quotas: {configs: -1}}}", "tenants.team-a.quotas.configs"),
        ("{team-a: {quotas: {configs: true}}}", "tenants.team-a.quotas.configs"),
        ("{team-a: {quotas: {turns: 1}}}", "unknown quota 'turns'"),
        ("{team-a: {allow_literal_secrets: yes please}}", "allow_literal_secrets"),
        ("{team-a: {quota: {}}}", "unknown field 'quota'"),
    ],
)
def test_a_bad_tenant_entry_is_refused_with_where(tenants: str, where: str) -> None:
    with pytest.raises(KeyFileError, match=where.replace("[", r"\[")):
        parse_keys(f"keys: []\ntenants: {tenants}\n", "keys.yaml", DEFAULTS)


def test_settings_give_the_default_policy() -> None:
    settings = ConfigServiceSettings(
        quota_configs=7, quota_send_messages_per_minute=30, allow_literal_secrets=True
    )
    policy = settings.tenant_defaults()
    assert policy.quotas.configs == 7
    assert policy.quotas.send_messages_per_minute == 30
    assert policy.allow_literal_secrets is True
    assert settings.key_store().policy("anyone") == policy


def test_jwt_settings_go_together() -> None:
    assert ConfigServiceSettings().token_verifier() is None
    with pytest.raises(ValueError, match="go together"):
        ConfigServiceSettings(jwt_issuer="https://idp").token_verifier()
