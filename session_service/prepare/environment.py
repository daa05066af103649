"""What a bundle's `${VAR}` references may resolve to: the operator decides, per tenant.

A bundle is a tenant's input, so a reference never reads SessionService's environment
freely. It resolves from, in order:

1. the tenant's own secrets: the `secrets` map of its entry in the key list, or files in
   `TANDEM_TENANT_SECRETS_DIR/<tenant>/<NAME>`;
2. SessionService's environment, for names the operator allows: `TANDEM_BUNDLE_ENV_ALLOW`
   (names or globs such as `OPENAI_API_KEY,ACME_*`) plus the tenant's own `bundle_env_allow`.

Anything else is refused with one message that names the rule, never a value and never
whether the variable exists. A secret (a tenant secret, or a variable whose name says it is a
key, token or password) is expanded only where a module reads a credential (`api_key` and
the like): a module that is not handed it as a credential never sees it, so it cannot reach a
reply, a tool, an event or a log.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.bundle.literal_secrets import is_secret_key
from shared.bundle.refs import EnvReference
from shared.quotas import TenantPolicy

_log = logging.getLogger(__name__)

# Names of tenant folders and secret files: no separators, no dot-files.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_SECRET_BYTES = 64 * 1024

NOT_AVAILABLE = "ENV_NOT_AVAILABLE"
SECRET_OUTSIDE_CREDENTIAL = "SECRET_OUTSIDE_CREDENTIAL"

UNAVAILABLE_MESSAGE = (
    "unresolvable: bundles may reference only their tenant's secrets and variables the "
    "operator allows (TANDEM_BUNDLE_ENV_ALLOW), set or with a default"
)
OUTSIDE_CREDENTIAL_MESSAGE = (
    "a secret may be referenced only by a module's credential setting (such as api_key)"
)


def is_secret_name(name: str) -> bool:
    """True for variable names that say they hold a credential (`OPENAI_API_KEY`, `X_TOKEN`)."""
    normalized = name.lower().replace("-", "").replace("_", "")
    return is_secret_key(name) or normalized.endswith("key")


def parse_patterns(text: str) -> tuple[str, ...]:
    """Comma-separated names or globs, blanks dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Resolution:
    """A reference's value, or why it has none (`problem` is a violation type)."""

    value: str = ""
    problem: str = ""
    message: str = ""


class BundleEnvironment:
    """Resolves one tenant's references under the operator's rules."""

    def __init__(
        self,
        environment: Mapping[str, str],
        allow: tuple[str, ...] = (),
        policies: Callable[[str], TenantPolicy] | None = None,
        secrets_dir: str = "",
    ) -> None:
        self._environment = environment
        self._allow = allow
        self._policies = policies
        self._secrets_dir = Path(secrets_dir) if secrets_dir else None

    def _allowed(self, tenant_id: str, name: str) -> bool:
        patterns = self._allow
        if self._policies is not None:
            patterns = patterns + self._policies(tenant_id).bundle_env_allow
        # Case-sensitive on every platform: an allowed `ACME_*` never admits `acme_x`.
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    def _tenant_secret(self, tenant_id: str, name: str) -> str | None:
        if self._policies is not None:
            found = self._policies(tenant_id).secrets.get(name)
            if found is not None:
                return found
        if self._secrets_dir is None:
            return None
        if not _SAFE_NAME.fullmatch(tenant_id) or not _SAFE_NAME.fullmatch(name):
            return None
        path = self._secrets_dir / tenant_id / name
        try:
            # The operator's folder; a symlink in it (Kubernetes mounts use them) is theirs.
            if not path.is_file():
                return None
            data = path.read_bytes()[: MAX_SECRET_BYTES + 1]
        except OSError:
            return None
        if len(data) > MAX_SECRET_BYTES:
            _log.warning("tenant secret file over %d bytes ignored", MAX_SECRET_BYTES)
            return None
        try:
            return data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return None

    def resolve(self, tenant_id: str, reference: EnvReference, credential: bool) -> Resolution:
        """The value of reference for tenant_id, at a credential setting or not."""
        secret = self._tenant_secret(tenant_id, reference.name)
        if secret is not None:
            if not credential:
                return Resolution(
                    problem=SECRET_OUTSIDE_CREDENTIAL, message=OUTSIDE_CREDENTIAL_MESSAGE
                )
            return Resolution(secret)
        if self._allowed(tenant_id, reference.name):
            if not credential and is_secret_name(reference.name):
                return Resolution(
                    problem=SECRET_OUTSIDE_CREDENTIAL, message=OUTSIDE_CREDENTIAL_MESSAGE
                )
            found = self._environment.get(reference.name)
            if found is not None:
                return Resolution(found)
            if reference.default is not None:
                return Resolution(reference.default)
            # The operator allowed it but did not set it: worth their attention, not the
            # tenant's (who gets the same answer as for any other name).
            _log.warning(
                "bundle variable %s is allowed but not set in SessionService's environment",
                reference.name,
            )
            return Resolution(problem=NOT_AVAILABLE, message=UNAVAILABLE_MESSAGE)
        return Resolution(problem=NOT_AVAILABLE, message=UNAVAILABLE_MESSAGE)
