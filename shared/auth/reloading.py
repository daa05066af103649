"""A file parsed once and again whenever it changes, so credentials rotate without a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

_log = logging.getLogger(__name__)

T = TypeVar("T")


class ReloadingFile(Generic[T]):
    """The parsed content of a file, re-read when its size or mtime changes.

    The first read raises (a server must not start on a broken file); a later broken read
    keeps the previous content and logs, so a half-written file does not lock everyone out.
    """

    def __init__(
        self, path: Path, parse: Callable[[str, str], T], every_seconds: float, what: str
    ) -> None:
        self._path = path
        self._parse = parse
        self._every = every_seconds
        self._what = what
        self._checked = time.monotonic()
        self._stamp = (0, 0)
        self._value = self._read()

    def _read(self) -> T:
        # Stat before reading: a write that lands in between changes the stamp again, so the
        # next check re-reads rather than keeping a stale copy.
        stat = self._path.stat()
        value = self._parse(self._path.read_text(encoding="utf-8"), str(self._path))
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return value

    def current(self) -> T:
        """The content as of the last check; checks again at most every `every_seconds`."""
        now = time.monotonic()
        if now - self._checked >= self._every:
            self._checked = now
            try:
                stat = self._path.stat()
                if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                    self._value = self._read()
                    _log.info("%s reloaded from %s", self._what, self._path)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                _log.error("%s not reloaded, keeping the previous one: %s", self._what, exc)
        return self._value
