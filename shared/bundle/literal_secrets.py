"""Heuristics for credentials written into a bundle instead of referenced with `${VAR}`."""

from __future__ import annotations

import re

from shared.bundle.refs import is_single_reference

# Compared against the key lower-cased without `-`/`_`, as a suffix, so `anthropic_api_key`
# and `github-token` match while `max_tokens` and `token_budget` do not.
_SECRET_KEY_SUFFIXES = (
    "apikey",
    "secret",
    "token",
    "password",
    "passwd",
    "credential",
    "credentials",
    "privatekey",
    "accesskey",
    "clientsecret",
)

_CHARS = "[A-Za-z0-9_-]"
# Real keys mix in digits; requiring one keeps names like `sk-learn-pipeline` from matching.
_WITH_DIGIT = f"(?={_CHARS}*[0-9])"
_KEY_FORMATS = (
    ("an Anthropic API key", re.compile(rf"(?<![A-Za-z0-9])sk-ant-{_WITH_DIGIT}{_CHARS}{{10,}}")),
    ("an OpenAI-style API key", re.compile(rf"(?<![A-Za-z0-9])sk-{_WITH_DIGIT}{_CHARS}{{20,}}")),
    ("an AWS access key id", re.compile(r"(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![A-Z0-9])")),
    ("a GitHub token", re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}")),
)


def is_secret_key(key: str) -> bool:
    """True for keys such as `api_key`, `client-secret` or `DB_PASSWORD`."""
    normalized = key.lower().replace("-", "").replace("_", "")
    return normalized.endswith(_SECRET_KEY_SUFFIXES)


def is_literal_secret(key: str, value: str) -> bool:
    """A non-empty value under a secret-looking key that is not exactly one `${VAR}`."""
    return is_secret_key(key) and value.strip() != "" and not is_single_reference(value.strip())


def key_format(value: str) -> str | None:
    """What well-known credential `value` contains, if any (never the credential itself)."""
    for description, pattern in _KEY_FORMATS:
        if pattern.search(value):
            return description
    return None
