"""Per-tenant limits: how much of a deployment one tenant may hold and how fast it may ask.

Defaults come from settings (`TANDEM_QUOTA_*`); the key list can override them per tenant:

    tenants:
      team-a:
        allow_literal_secrets: true
        bundle_env_allow: [ACME_*]          # more variables its bundles may reference
        secrets: {GITHUB_TOKEN: ghp_...}    # its own credentials, for `${GITHUB_TOKEN}`
        quotas: {configs: 500, sessions: 20000, concurrent_turns: 16,
                 send_messages_per_minute: 600, send_message_burst: 50,
                 session_ttl_max_seconds: 86400}

A limit of 0 means unlimited.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import QuotaViolation, ResourceExhausted

QUOTA_FIELDS = (
    "configs",
    "sessions",
    "concurrent_turns",
    "send_messages_per_minute",
    "send_message_burst",
    "session_ttl_max_seconds",
)


@dataclass(frozen=True)
class Quotas:
    """Limits for one tenant; 0 is unlimited."""

    configs: int = 0
    sessions: int = 0
    concurrent_turns: int = 0
    send_messages_per_minute: int = 0
    # How many messages may be sent at once before the per-minute rate applies; 0 is a full
    # minute's worth.
    send_message_burst: int = 0
    # The longest idle ttl a session of the tenant may ask for (CreateSession.ttl).
    session_ttl_max_seconds: int = 0


@dataclass(frozen=True)
class TenantPolicy:
    """What one tenant may do beyond what its role allows."""

    quotas: Quotas = Quotas()
    # Literal credentials in a bundle are refused unless the tenant opts in.
    allow_literal_secrets: bool = False
    # Environment variables this tenant's bundles may reference, beyond the global list.
    bundle_env_allow: tuple[str, ...] = ()
    # The tenant's own credentials, referenced as `${NAME}` by credential settings only.
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)


NO_LIMITS = TenantPolicy()

# The domain asks for a tenant's policy through this; the key store answers it.
PolicyLookup = Callable[[str], TenantPolicy]


def unlimited(_tenant_id: str) -> TenantPolicy:
    """The policy used where none is configured (tests and tools)."""
    return NO_LIMITS


def parse_policy(raw: Any, defaults: TenantPolicy, where: str) -> TenantPolicy:
    """A tenant's policy from its `tenants:` entry, over defaults; ValueError names the field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(raw) - {"quotas", "allow_literal_secrets", "bundle_env_allow", "secrets"}
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    allow = raw.get("allow_literal_secrets", defaults.allow_literal_secrets)
    if not isinstance(allow, bool):
        raise ValueError(f"{where}.allow_literal_secrets: expected true or false")
    quotas = raw.get("quotas", {})
    if not isinstance(quotas, Mapping):
        raise ValueError(f"{where}.quotas: expected a mapping")
    overrides: dict[str, int] = {}
    for name, value in quotas.items():
        if name not in QUOTA_FIELDS:
            raise ValueError(f"{where}.quotas: unknown quota {name!r}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}.quotas.{name}: expected a whole number >= 0")
        overrides[name] = value
    return TenantPolicy(
        dataclasses.replace(defaults.quotas, **overrides),
        allow,
        _names(raw.get("bundle_env_allow", []), f"{where}.bundle_env_allow"),
        _secrets(raw.get("secrets", {}), f"{where}.secrets"),
    )


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _names(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise ValueError(f"{where}: expected a list of variable names or globs")
    return tuple(raw)


def _secrets(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping of variable names to values")
    found: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            # The name only: the value is a secret and never goes into a message.
            raise ValueError(f"{where}: {str(name)[:64]!r} is not a variable name")
        if not isinstance(value, str):
            raise ValueError(f"{where}.{name}: expected a string")
        found[name] = value
    return found


def check_count(tenant_id: str, what: str, used: int, limit: int, advice: str) -> None:
    """Raises ResourceExhausted when a tenant already holds `limit` of `what` (0: unlimited)."""
    if limit <= 0 or used < limit:
        return
    raise ResourceExhausted(
        f"Tenant {tenant_id!r} has reached its quota of {limit} {what.replace('_', ' ')}; {advice}",
        reason="QUOTA_EXCEEDED",
        metadata={"quota": what, "limit": str(limit), "used": str(used)},
        violations=[QuotaViolation(f"tenant:{tenant_id}", f"{what}: {used} of {limit} used")],
    )


@dataclass(frozen=True)
class Bucket:
    """A token bucket's state: tokens left as of `at` (seconds on any steady clock)."""

    tokens: float
    at: float


def take_token(
    bucket: Bucket | None, now: float, per_minute: int, burst: int
) -> tuple[Bucket, float]:
    """Takes one token: the new state, and 0, or how many seconds until a token is free."""
    capacity = float(burst or per_minute)
    rate = per_minute / 60.0
    if bucket is None:
        tokens, at = capacity, now
    else:
        # A replica whose clock is behind refills nothing, and does not move the bucket's
        # time back (which would hand the next replica a refill it has not earned).
        at = max(bucket.at, now)
        tokens = min(capacity, bucket.tokens + (at - bucket.at) * rate)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, at), 0.0
    return Bucket(tokens, at), (1.0 - tokens) / rate


def rate_limited(tenant_id: str, what: str, per_minute: int, retry_after: float) -> None:
    """Raises the ResourceExhausted a caller over its rate gets, with when to retry."""
    seconds = math.ceil(retry_after * 1000) / 1000
    raise ResourceExhausted(
        f"Tenant {tenant_id!r} is over its rate of {per_minute} {what.replace('_', ' ')} per "
        f"minute; retry in {seconds:g} s.",
        reason="RATE_LIMITED",
        metadata={"quota": f"{what}_per_minute", "limit": str(per_minute)},
        violations=[
            QuotaViolation(f"tenant:{tenant_id}", f"{what}_per_minute: {per_minute} exceeded")
        ],
        retry_after_seconds=seconds,
    )
