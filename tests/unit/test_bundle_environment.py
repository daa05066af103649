"""Which `${VAR}` references resolve, for whom, and where: no I/O but a temp secrets folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from session_service.prepare.environment import (
    NOT_AVAILABLE,
    SECRET_OUTSIDE_CREDENTIAL,
    BundleEnvironment,
    is_secret_name,
    parse_patterns,
)
from shared.bundle.refs import EnvReference
from shared.quotas import NO_LIMITS, TenantPolicy, parse_policy

ENV = {"OPENAI_API_KEY": "sk-env", "ACME_URL": "http://acme", "HOME": "/root"}


def _policy(tenant: str) -> TenantPolicy:
    if tenant == "team-a":
        return parse_policy(
            {"bundle_env_allow": ["HOME"], "secrets": {"A_TOKEN": "a-secret"}},
            NO_LIMITS,
            "tenants.team-a",
        )
    return NO_LIMITS


def _environment(secrets_dir: str = "") -> BundleEnvironment:
    return BundleEnvironment(ENV, parse_patterns("OPENAI_*, ACME_*,"), _policy, secrets_dir)


@pytest.mark.parametrize(
    ("name", "credential", "tenant", "expected"),
    [
        ("OPENAI_API_KEY", True, "team-b", ("sk-env", "")),
        ("OPENAI_API_KEY", False, "team-b", ("", SECRET_OUTSIDE_CREDENTIAL)),
        ("ACME_URL", False, "team-b", ("http://acme", "")),
        ("HOME", False, "team-b", ("", NOT_AVAILABLE)),
        ("HOME", False, "team-a", ("/root", "")),  # the tenant's own allow list
        ("A_TOKEN", True, "team-a", ("a-secret", "")),
        ("A_TOKEN", False, "team-a", ("", SECRET_OUTSIDE_CREDENTIAL)),
        ("A_TOKEN", True, "team-b", ("", NOT_AVAILABLE)),  # another tenant's secret
        ("acme_url", False, "team-b", ("", NOT_AVAILABLE)),  # globs are case-sensitive
        ("ACME_MISSING", False, "team-b", ("", NOT_AVAILABLE)),
    ],
)
def test_resolution_rules(
    name: str, credential: bool, tenant: str, expected: tuple[str, str]
) -> None:
    found = _environment().resolve(tenant, EnvReference(name, None), credential)
    assert (found.value, found.problem) == expected


def test_defaults_apply_only_to_allowed_names() -> None:
    environment = _environment()
    assert environment.resolve("t", EnvReference("ACME_MISSING", "d"), False).value == "d"
    refused = environment.resolve("t", EnvReference("HOME", "d"), False)
    assert refused.problem == NOT_AVAILABLE


def test_the_refusal_never_says_whether_a_variable_exists() -> None:
    environment = _environment()
    exists = environment.resolve("t", EnvReference("HOME", None), False)
    missing = environment.resolve("t", EnvReference("NO_SUCH_THING", None), False)
    allowed_unset = environment.resolve("t", EnvReference("ACME_MISSING", None), False)
    assert exists == missing == allowed_unset
    assert "/root" not in exists.message


def test_secrets_folder_per_tenant(tmp_path: Path) -> None:
    (tmp_path / "team-b").mkdir()
    (tmp_path / "team-b" / "B_TOKEN").write_text("b-secret\n")
    (tmp_path / "B_TOKEN").write_text("top-level files are no tenant's")
    environment = _environment(secrets_dir=str(tmp_path))
    assert environment.resolve("team-b", EnvReference("B_TOKEN", None), True).value == "b-secret"
    assert environment.resolve("team-c", EnvReference("B_TOKEN", None), True).problem
    # A tenant id that is not a plain folder name never walks the folder.
    assert environment.resolve("..", EnvReference("B_TOKEN", None), True).problem
    assert environment.resolve("team-b/..", EnvReference("B_TOKEN", None), True).problem


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("ACME_LLM_KEY", True),
        ("GITHUB_TOKEN", True),
        ("DB_PASSWORD", True),
        ("ACME_LLM_URL", False),
        ("MODEL", False),
        ("MAX_TOKENS", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"secrets": ["A"]}, "secrets: expected a mapping"),
        ({"secrets": {"not a name": "x"}}, "is not a variable name"),
        ({"secrets": {"A": 1}}, "secrets.A: expected a string"),
        ({"bundle_env_allow": "HOME"}, "bundle_env_allow: expected a list"),
    ],
)
def test_bad_tenant_entries_are_refused_with_their_location(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_policy(raw, NO_LIMITS, "tenants.x")
    assert "tenants.x" in str(refused.value)
