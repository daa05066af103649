"""Bundles shipped with SessionService, includable by their `tandem:NAME` reference.

They live in the `tandem` namespace so that they never shadow a tenant's own package: a user
who includes `foundation` means Amplifier's foundation package, imported into the tenant,
never something of Tandem's.
"""

from __future__ import annotations

from importlib import resources

from shared.bundle.references import SHIPPED_NAMESPACE as NAMESPACE

# The shipped bundles, by reference; each is session_service/bundles/NAME.yaml.
SHIPPED = (f"{NAMESPACE}:dev",)


def shipped_bundle(ref: str) -> str | None:
    """The document of the shipped bundle `tandem:NAME`, or None for any other reference."""
    if ref not in SHIPPED:
        return None
    name = ref.removeprefix(f"{NAMESPACE}:")
    return resources.files("session_service.bundles").joinpath(f"{name}.yaml").read_text()
