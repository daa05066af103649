"""Logs turn and tool events.

Config keys (see CONFIG_KEYS):
- `log_level`: DEBUG, INFO (default), WARNING or ERROR: the level of each event's line.

Lines go to the `tandem.hooks` logger, so to the service's own log; Amplifier's `output_dir`
(files on the server) is not read.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from session_service.workspace import Sandbox

_log = logging.getLogger("tandem.hooks")

MASK = "***"
_SECRET_MARKERS = ("api_key", "token", "secret", "password", "authorization")
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}


def is_secret_key(key: object) -> bool:
    """Whether a data key looks like it holds a credential."""
    lowered = str(key).lower().replace("-", "_")
    return any(marker in lowered for marker in _SECRET_MARKERS)


def mask_secrets(value: Any) -> Any:
    """A copy of value with the values of secret-looking keys replaced, at any depth."""
    if isinstance(value, Mapping):
        return {
            str(key): MASK if is_secret_key(key) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    return value


class LoggingHook:
    """Logs turn and tool events."""

    CONFIG_KEYS: frozenset[str] = frozenset({"log_level"})

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox | None = None) -> None:
        # Logging keeps no session state.
        del sandbox
        level = config.get("log_level")
        if level is None:
            level = "INFO"
        if not isinstance(level, str) or level.upper() not in _LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LEVELS)} (got {level!r})")
        self.level = _LEVELS[level.upper()]

    async def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        """Logs one line: the event name and its data, secrets masked. Never raises."""
        # A hook must not disturb the turn; nothing useful can be done with a failure here.
        with contextlib.suppress(Exception):
            if not _log.isEnabledFor(self.level):
                return
            masked = mask_secrets(data)
            parts = [f"event={event}"]
            parts.extend(
                f"{key}={json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)}"
                for key, value in sorted(masked.items())
            )
            _log.log(
                self.level,
                "%s",
                " ".join(parts),
                extra={"tandem_event": event, "tandem_data": masked},
            )
