"""Typed reads of a provider module's `config` mapping, with errors that name the key.

Provider keys follow Amplifier's provider modules, so a provider file written for Amplifier
means the same here: `default_model` (with `model` as an alias), `base_url`, `api_key`,
`priority`, `temperature` and `max_tokens`. `priority` is read by preparation, which picks a
session's default provider by it; the provider itself accepts it and ignores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from session_service.turns.protocols import ProviderError

# The keys every provider module accepts, whatever else it reads.
PROVIDER_KEYS = frozenset(
    {"default_model", "model", "base_url", "api_key", "priority", "temperature", "max_tokens"}
)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ProviderConfigError(ProviderError, ValueError):
    """A provider's config is unusable: PROVIDER_CONFIG, and a ValueError like any module's."""

    def __init__(self, message: str) -> None:
        super().__init__("PROVIDER_CONFIG", message)


class ProviderConfig:
    """Reads one provider's config; a bad value is ProviderError PROVIDER_CONFIG."""

    def __init__(self, module: str, config: Mapping[str, Any]) -> None:
        self._module = module
        self._config = config

    def _bad(self, key: str, what: str) -> ProviderError:
        return ProviderConfigError(f"{self._module}: {key} must be {what}.")

    def aliased(self, key: str, alias: str) -> str:
        """Which of key and its alias holds the setting (key when neither is set).

        Both may be given when they agree; different values are refused, naming both, so a
        bundle never runs with the one its author did not mean.
        """
        has_key = self._config.get(key) is not None
        has_alias = self._config.get(alias) is not None
        if has_key and has_alias and self._config[key] != self._config[alias]:
            raise ProviderConfigError(
                f"{self._module}: {key} ({self._config[key]!r}) and its alias {alias} "
                f"({self._config[alias]!r}) differ; set only {key}."
            )
        return alias if has_alias and not has_key else key

    def model(self) -> str:
        """The model: `default_model` (Amplifier's name) or its alias `model`."""
        value = self._config.get(self.aliased("default_model", "model"))
        if not isinstance(value, str) or not value:
            raise ProviderConfigError(
                f"{self._module}: default_model (or its alias model) must be a non-empty string."
            )
        return value

    def optional_model(self, default: str) -> str:
        """Like model(), with default when neither key is set."""
        key = self.aliased("default_model", "model")
        if self._config.get(key) is None:
            return default
        return self.model()

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
