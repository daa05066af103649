"""Typed reads of a provider module's `config` mapping, with errors that name the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from session_service.turns.protocols import ProviderError


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ProviderConfig:
    """Reads one provider's config; a bad value is ProviderError PROVIDER_CONFIG."""

    def __init__(self, module: str, config: Mapping[str, Any]) -> None:
        self._module = module
        self._config = config

    def _bad(self, key: str, what: str) -> ProviderError:
        return ProviderError("PROVIDER_CONFIG", f"{self._module}: {key} must be {what}.")

    def required_str(self, key: str) -> str:
        """A non-empty string."""
        value = self._config.get(key)
        if not isinstance(value, str) or not value:
            raise self._bad(key, "a non-empty string")
        return value

    def optional_str(self, key: str) -> str | None:
        """A string, or None when absent or empty."""
        value = self._config.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def positive_int(self, key: str, default: int) -> int:
        """An integer of at least 1."""
        value = self._config.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self._bad(key, "a positive integer")
        return value

    def optional_positive_int(self, key: str) -> int | None:
        """An integer of at least 1, or None when absent."""
        if self._config.get(key) is None:
            return None
        return self.positive_int(key, 1)

    def non_negative_int(self, key: str, default: int) -> int:
        """An integer of at least 0."""
        value = self._config.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self._bad(key, "a non-negative integer")
        return value

    def optional_number(self, key: str) -> float | None:
        """A number, or None when absent."""
        value = self._config.get(key)
        if value is None:
            return None
        if not _number(value):
            raise self._bad(key, "a number")
        return float(value)

    def positive_number(self, key: str, default: float) -> float:
        """A number above 0."""
        value = self._config.get(key, default)
        if not _number(value) or value <= 0:
            raise self._bad(key, "a positive number")
        return float(value)
