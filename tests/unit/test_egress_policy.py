"""The operator's list of hosts that provider modules may connect to."""

from __future__ import annotations

import pytest

from session_service.prepare.egress import DEFAULT_EGRESS_ALLOW, EgressPolicy


@pytest.mark.parametrize(
    ("allow", "url", "allowed"),
    [
        (DEFAULT_EGRESS_ALLOW, "https://api.openai.com/v1", True),
        (DEFAULT_EGRESS_ALLOW, "https://API.OpenAI.com/v1", True),
        (DEFAULT_EGRESS_ALLOW, "https://api.openai.com:443/v1", True),
        (DEFAULT_EGRESS_ALLOW, "https://api.openai.com:8443/v1", False),
        (DEFAULT_EGRESS_ALLOW, "http://api.openai.com/v1", False),  # port 80 was not named
        (DEFAULT_EGRESS_ALLOW, "https://api.openai.com.evil.example/v1", False),
        (DEFAULT_EGRESS_ALLOW, "https://user:pw@api.openai.com/v1", True),
        (DEFAULT_EGRESS_ALLOW, "https://evil.example@api.anthropic.com", True),
        (DEFAULT_EGRESS_ALLOW, "https://api.anthropic.com@evil.example", False),
        (DEFAULT_EGRESS_ALLOW, "http://169.254.169.254/latest", False),
        (DEFAULT_EGRESS_ALLOW, "file:///etc/passwd", False),
        (DEFAULT_EGRESS_ALLOW, "ftp://api.openai.com/", False),
        (DEFAULT_EGRESS_ALLOW, "https://api.openai.com:99999/", False),  # not a port
        (DEFAULT_EGRESS_ALLOW, "not a url", False),
        ("127.0.0.1:*", "http://127.0.0.1:8000/v1", True),
        ("127.0.0.1:*", "http://127.0.0.2:8000/v1", False),
        ("vllm.internal:8000", "http://vllm.internal:8000/v1", True),
        ("vllm.internal:8000", "http://vllm.internal:8001/v1", False),
        ("*.openai.azure.com", "https://acme.openai.azure.com/", True),
        ("*.openai.azure.com", "https://openai.azure.com.evil.example/", False),
        ("", "https://api.openai.com/v1", False),
    ],
)
def test_allowed_hosts(allow: str, url: str, allowed: bool) -> None:
    assert EgressPolicy(allow).allows(url) is allowed


def test_a_refusal_names_the_rule_not_the_url() -> None:
    problem = EgressPolicy("").problem("base_url", "https://secret-host.example/")
    assert problem is not None
    key, message = problem
    assert key == "base_url"
    assert "TANDEM_EGRESS_ALLOW" in message
    assert "secret-host" not in message
