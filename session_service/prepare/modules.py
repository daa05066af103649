"""Module resolution through Python entry points.

Modules ship in the image: a bundle's `source` is recorded, never fetched. A module is
installed when a distribution registers it under the group for its kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

GROUPS: Mapping[str, str] = {
    "provider": "tandem.providers",
    "tool": "tandem.tools",
    "hook": "tandem.hooks",
    "orchestrator": "tandem.orchestrators",
    "context": "tandem.contexts",
}


def load_factory(implementation: str) -> Any:
    """The object an implementation string ("package.module:object") names."""
    path, _, attribute = implementation.partition(":")
    return getattr(importlib.import_module(path), attribute)


class ModuleRegistry:
    """Installed module implementations by kind and name."""

    def __init__(self, installed: Mapping[str, Mapping[str, str]]) -> None:
        self._installed = {kind: dict(names) for kind, names in installed.items()}

    @classmethod
    def from_entry_points(cls) -> ModuleRegistry:
        """The modules registered by installed distributions."""
        return cls(
            {
                kind: {ep.name: ep.value for ep in entry_points(group=group)}
                for kind, group in GROUPS.items()
            }
        )

    def resolve(self, kind: str, name: str) -> str | None:
        """The implementation ("package.module:object") of a module, or None."""
        return self._installed.get(kind, {}).get(name)

    def names(self, kind: str) -> list[str]:
        """Installed module names of one kind."""
        return sorted(self._installed.get(kind, {}))

    @staticmethod
    def check_config(
        implementation: str, config: Mapping[str, Any], *scope: Any
    ) -> list[tuple[str, str]]:
        """What the module's own `check_config` finds wrong with config (none if it has none)."""
        check = getattr(load_factory(implementation), "check_config", None)
        if check is None or not isinstance(config, Mapping):
            return []
        return list(check(config, *scope))

    @staticmethod
    def reach_violation(implementation: str) -> str | None:
        """The violation type a module's check_config problems carry (its REACH_VIOLATION)."""
        violation = getattr(load_factory(implementation), "REACH_VIOLATION", None)
        return violation if isinstance(violation, str) else None

    @staticmethod
    def notice(implementation: str) -> str | None:
        """What PrepareConfig should warn about a module wherever it is used (its NOTICE)."""
        notice = getattr(load_factory(implementation), "NOTICE", None)
        return notice if isinstance(notice, str) and notice else None

    @staticmethod
    def config_keys(implementation: str) -> frozenset[str] | None:
        """The config keys a module reads (its CONFIG_KEYS), or None when it does not say."""
        keys = getattr(load_factory(implementation), "CONFIG_KEYS", None)
        return frozenset(keys) if keys is not None else None
