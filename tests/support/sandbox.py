"""What the services the tests start let bundles reach."""

from __future__ import annotations

# The variables test bundles reference; anything else stays out of their reach, as it would
# on a server whose operator allowed only these.
TEST_BUNDLE_ENV_ALLOW = "TANDEM_TEST_SECRET,TANDEM_UNSET_*,TANDEM_SCAN_PROVIDER_KEY"
# The tests' model servers listen on loopback ports chosen at random.
TEST_EGRESS_ALLOW = "api.openai.com,api.anthropic.com,127.0.0.1:*"
