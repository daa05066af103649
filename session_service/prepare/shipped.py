"""Bundles shipped with SessionService, includable by name (at least `foundation`)."""

from __future__ import annotations

from importlib import resources

SHIPPED = ("foundation",)


def shipped_bundle(name: str) -> str | None:
    """The document of a shipped bundle, or None."""
    if name not in SHIPPED:
        return None
    return resources.files("session_service.bundles").joinpath(f"{name}.yaml").read_text()
