"""What the services the tests start let bundles reach."""

from __future__ import annotations

import pytest

from tests.support.databases import in_ci

# The variables test bundles reference; anything else stays out of their reach, as it would
# on a server whose operator allowed only these.
TEST_BUNDLE_ENV_ALLOW = "TANDEM_TEST_SECRET,TANDEM_UNSET_*,TANDEM_SCAN_PROVIDER_KEY"
# The tests' model servers listen on loopback ports chosen at random.
TEST_EGRESS_ALLOW = "api.openai.com,api.anthropic.com,127.0.0.1:*"


def sandbox_unavailable(reason: str) -> None:
    """Skips a tool-bash test on a machine that cannot build the sandbox; fails it in CI,
    where the machine is known to, so a broken sandbox cannot pass as a skip."""
    if in_ci():
        pytest.fail(f"tool-bash's sandbox must work in CI: {reason}")
    pytest.skip(f"this machine cannot build the sandbox: {reason}")
