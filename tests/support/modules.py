"""Module registries for tests: the installed modules plus some only a test provides."""

from __future__ import annotations

from collections.abc import Mapping

from session_service.prepare.modules import GROUPS, ModuleRegistry


def installed_with(extra: Mapping[str, Mapping[str, str]]) -> ModuleRegistry:
    """The installed modules, plus (or overridden by) extra: kind -> name -> implementation."""
    installed = ModuleRegistry.from_entry_points()
    modules = {
        kind: {n: installed.resolve(kind, n) or "" for n in installed.names(kind)}
        for kind in GROUPS
    }
    for kind, names in extra.items():
        modules[kind].update(names)
    return ModuleRegistry(modules)
