"""Finds files by name (`glob`) and lines by regular expression (`grep`) in the session's sandbox.

The tools' names, descriptions and argument schemas follow Amplifier's tool-search module, so
prompts written for those work here; results are the same JSON objects (`total_matches`,
`results`, `files`, `counts`, `results_capped`...), plus a `notice` sentence whenever a cap or
a skipped file left something out. The search is pure Python (the `regex` package, no
ripgrep).

Config keys (see CONFIG_KEYS):

- `allowed_paths`: the folders searched (default: the workspace); relative ones are taken from
  the workspace, and each must lie in the sandbox (the workspace or the operator's extra roots).
- `max_results`: the most entries any one result lists (default 500); a `head_limit` of 0
  ("unlimited") or above it is cut to it.
- `default_limits`: entries per `output_mode` when the call gives no `head_limit` (default
  files_with_matches 200, content 500, count 200), each at most `max_results`.
- `max_file_size`: grep skips files larger than this many bytes (default 1 MiB).
- `max_files`: the most directory entries one call walks (default 20,000).
- `max_bytes_scanned`: the most file bytes one grep reads in all (default 64 MiB).
- `exclusions`: folder (and file) names skipped below the searched path unless the call sets
  `include_ignored` (default: node_modules, .git, .venv and other build or cache folders).
- `regex_timeout_seconds`: the most time one call may spend matching, across all its files
  (default and ceiling 2.0): a bundle may only lower it; a larger value is held to 2.0.

Confinement: the `path` argument is resolved (symlinks included) and must lie under an allowed
folder. The walk opens each folder and file relative to its parent's descriptor with
O_NOFOLLOW and never follows a symbolic link, so no link (or one swapped in mid-walk) leads
outside. Binary files (a NUL byte in their first 8 KiB) are skipped.

Bounds: every walk stops at `max_files` entries and grep at `max_bytes_scanned`, and the work
runs in a worker thread that stops when the call is cancelled.

Hostile patterns: the model's regular expression (and every glob, which becomes one) is compiled
and matched with the `regex` package rather than `re`, because `re` can be neither timed out
nor interrupted and holds the interpreter lock while it matches, so one pattern that backtracks
exponentially (`(a|aa)+$` on a long line of `a`s) would stall every session in the process.
Each match runs with `concurrent=True`, so it releases that lock, and with a timeout of what is
left of `regex_timeout_seconds`: the time spent matching is counted across every line and file
of the call, so many slow matches cannot add up past it either. Running out of that time ends
the call with an error result ("the regular expression took too long: simplify it"), not with
partial results: the line being matched when time ran out is neither a match nor a miss, so
any counts or file lists would be wrong without saying where. Each timed match costs a few
microseconds, so grep searches a file's text whole and then only the lines that need it; a
pattern that matches most lines of tens of MiB can still run out of time (narrow path or glob).
`regex` expands counted repeats when it compiles (`(?:a{1000}){1000}` is a million nodes), so
a pattern whose nested counts multiply past MAX_PATTERN_EXPANSION is refused before it is
compiled, and compiled patterns are kept out of `regex`'s cache, which holds up to 500.

Compatibility: compiled with `regex`'s default V0 syntax, which is `re`'s; `-i` (IGNORECASE
with simple case folding, Unicode by default), and `multiline` (MULTILINE and DOTALL) mean what
they mean in `re`. `regex` also accepts syntax that `re` refuses (`\\p{L}`, fuzzy matching,
recursion), and inside `[...]`, `[:alpha:]` is a POSIX class for `regex` where `re` saw its
characters.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex  # type: ignore[import-untyped]

from session_service.turns.protocols import ToolResult, ToolSpec
from session_service.workspace import Sandbox, configured_folders

KIB = 1024
MIB = 1024 * KIB

DEFAULT_MAX_RESULTS = 500
DEFAULT_LIMITS: Mapping[str, int] = {"files_with_matches": 200, "content": 500, "count": 200}
DEFAULT_MAX_FILE_SIZE = 1 * MIB
DEFAULT_MAX_FILES = 20_000
DEFAULT_MAX_BYTES_SCANNED = 64 * MIB
# Also the ceiling: a bundle may only lower it, since a tenant's pattern burns a core that long.
DEFAULT_REGEX_TIMEOUT_SECONDS = 2.0
# Amplifier's list: folders that hold dependencies, caches and build output, not sources.
DEFAULT_EXCLUSIONS = (
    "node_modules",
    ".venv",
    "venv",
    ".git",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".tox",
    "dist",
    "build",
    ".next",
    ".nuxt",
    "target",
    "vendor",
    ".gradle",
    ".idea",
    ".vscode",
    "coverage",
    ".nyc_output",
)
OUTPUT_MODES = ("content", "files_with_matches", "count")

# One matched line can be megabytes (minified code); the model needs only its start.
MAX_LINE_CHARS = 1000
# Context lines asked for per side of a match, at most.
MAX_CONTEXT_LINES = 50
# Each open folder holds a descriptor while the walk is below it.
MAX_DEPTH = 64
MAX_PATTERN_CHARS = 4096
# Nodes a compiled pattern may have once counted repeats are copied out (about 270 bytes each).
MAX_PATTERN_EXPANSION = 50_000
BINARY_SNIFF_BYTES = 8192

# grep's `type` argument: Amplifier's names and aliases, as file name patterns.
TYPE_GLOBS: Mapping[str, tuple[str, ...]] = {
    "c": ("*.c", "*.h"),
    "cpp": ("*.cpp", "*.cc", "*.cxx", "*.hpp", "*.hh", "*.hxx", "*.h"),
    "cs": ("*.cs",),
    "css": ("*.css",),
    "go": ("*.go",),
    "h": ("*.h",),
    "hpp": ("*.hpp", "*.hh", "*.hxx"),
    "html": ("*.html", "*.htm"),
    "java": ("*.java",),
    "js": ("*.js", "*.jsx", "*.mjs", "*.cjs"),
    "json": ("*.json",),
    "lua": ("*.lua",),
    "md": ("*.md", "*.markdown"),
    "php": ("*.php",),
    "py": ("*.py", "*.pyi"),
    "rb": ("*.rb",),
    "rust": ("*.rs",),
    "sh": ("*.sh", "*.bash"),
    "sql": ("*.sql",),
    "swift": ("*.swift",),
    "toml": ("*.toml",),
    "ts": ("*.ts", "*.tsx", "*.mts", "*.cts"),
    "txt": ("*.txt",),
    "xml": ("*.xml",),
    "yaml": ("*.yaml", "*.yml"),
}
TYPE_ALIASES: Mapping[str, str] = {
    "typescript": "ts",
    "javascript": "js",
    "python": "py",
    "ruby": "rb",
    "markdown": "md",
    "shell": "sh",
    "bash": "sh",
    "csharp": "cs",
    "c#": "cs",
    "c++": "cpp",
    "cplusplus": "cpp",
    "golang": "go",
    "rs": "rust",
    "yml": "yaml",
    "tsx": "ts",
    "jsx": "js",
}

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class _Refused(Exception):
    """A call that ends in an error result; the message is safe to show the model."""


class _Stopped(Exception):
    """The call was cancelled: the worker thread gives up."""


class _LineByLine(Exception):
    """Searching a file's text whole was too slow: search its lines one by one instead."""


# --- configuration -------------------------------------------------------------------------


def _positive_int(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer")
    return value


def _seconds(config: Mapping[str, Any], key: str, ceiling: float) -> float:
    """A bundle's time limit, held to the ceiling (also the default): it may only lower it."""
    value = config.get(key)
    if value is None:
        return ceiling
    # `value != value` is NaN; no float() before min(), which a huge int would overflow.
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ValueError(f"{key} must be a positive number of seconds")
    if value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds")
    return float(min(value, ceiling))


def _search_roots(config: Mapping[str, Any], sandbox: Sandbox) -> tuple[Path, ...]:
    roots = configured_folders(config, "allowed_paths", sandbox)
    return (sandbox.workspace,) if roots is None else roots


def _limits(config: Mapping[str, Any], max_results: int) -> dict[str, int]:
    value = config.get("default_limits")
    limits = dict(DEFAULT_LIMITS)
    if value is not None:
        if not isinstance(value, Mapping):
            raise ValueError("default_limits must map output modes to positive integers")
        for mode in OUTPUT_MODES:
            given = value.get(mode)
            if given is None:
                continue
            if not isinstance(given, int) or isinstance(given, bool) or given < 1:
                raise ValueError(f"default_limits.{mode} must be a positive integer")
            limits[mode] = given
    return {mode: min(limit, max_results) for mode, limit in limits.items()}


def _exclusions(config: Mapping[str, Any]) -> frozenset[str]:
    value = config.get("exclusions")
    if value is None:
        return frozenset(DEFAULT_EXCLUSIONS)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("exclusions must be a list of folder names")
    return frozenset(value)


# --- patterns ------------------------------------------------------------------------------

# `regex` ships no type information; a compiled pattern is one of its Pattern objects.
Compiled = Any

_COUNTED_REPEAT = re.compile(r"\{(\d*)(?:,\d*)?\}")


def pattern_expansion(pattern: str, ceiling: int = MAX_PATTERN_EXPANSION) -> int:
    """An over-estimate of the nodes `regex` compiles pattern into (stops counting at ceiling+1).

    `regex` copies a counted repeat's body out `{min}` times, so nested counts multiply; the
    scan is lexical (escapes and `[...]` are single atoms, alternatives are added up), which
    can only over-count.
    """
    over = ceiling + 1
    groups: list[list[int]] = [[]]  # the atoms' sizes in each open group, innermost last
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            groups[-1].append(1)
            i += 2
            continue
        if char == "[":
            j = i + 1
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            groups[-1].append(1)
            i = j + 1
            continue
        if char == "(":
            groups.append([])
        elif char == ")" and len(groups) > 1:
            inner = groups.pop()
            groups[-1].append(min(max(sum(inner), 1), over))
        elif char == "{" and groups[-1] and (repeat := _COUNTED_REPEAT.match(pattern, i)):
            low = repeat.group(1)
            # Past the ceiling the exact count no longer matters (and int() of a long digit run
            # is slow).
            times = over if len(low) > 9 else max(int(low or "0"), 1)
            groups[-1][-1] = min(groups[-1][-1] * times, over)
            i = repeat.end()
            continue
        else:
            groups[-1].append(1)
        i += 1
    while len(groups) > 1:
        inner = groups.pop()
        groups[-1].append(min(max(sum(inner), 1), over))
    return min(sum(groups[0]), over)


def compile_pattern(pattern: str, flags: int = 0) -> Compiled:
    """The pattern compiled by `regex` (V0, `re`'s syntax), or ValueError saying why not."""
    if pattern_expansion(pattern) > MAX_PATTERN_EXPANSION:
        raise ValueError(
            "counted repeats such as {1000} multiply, when nested, past"
            + f" {MAX_PATTERN_EXPANSION} copies; use smaller counts"
        )
    try:
        # Not cached: a tenant could otherwise keep hundreds of large compiled patterns alive.
        return regex.compile(pattern, flags, cache_pattern=False)
    except Exception as exc:
        # regex.error, or whatever else a hostile pattern makes its compiler raise.
        raise ValueError(str(exc) or type(exc).__name__) from None
    finally:
        _forget(pattern)


def _forget(pattern: str) -> None:
    # `regex` remembers every pattern it compiles in a locale table that only its cache trims;
    # with the cache off it would grow for every distinct pattern a tenant sends.
    table = getattr(getattr(regex, "_main", None), "_locale_sensitive", None)
    if isinstance(table, dict):
        table.pop((str, pattern), None)


# --- glob patterns -------------------------------------------------------------------------


def glob_regex(pattern: str, *, anywhere: bool) -> Compiled:
    """A glob (`*`, `?`, `[...]`, `**`, `{a,b}`) as a regex over `/`-separated paths.

    With anywhere, a pattern without `/` matches a name at any depth (as ripgrep's --glob).
    """
    body = pattern.lstrip("/")
    if anywhere and "/" not in body:
        body = "**/" + body
    out: list[str] = []
    braces = 0
    i = 0
    while i < len(body):
        char = body[i]
        if body.startswith("**", i):
            at_start = i == 0 or body[i - 1] == "/"
            after = i + 2
            if at_start and body.startswith("/", after):
                out.append("(?:.*/)?")
                i = after + 1
                continue
            if at_start and after == len(body):
                out.append(".*")
                i = after
                continue
            out.append("[^/]*")
            i = after
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = body.find("]", i + 2)
            if end == -1:
                out.append(re.escape(char))
            else:
                inner = body[i + 1 : end]
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\") + "]")
                i = end
        elif char == "{":
            braces += 1
            out.append("(?:")
        elif char == "," and braces:
            out.append("|")
        elif char == "}" and braces:
            braces -= 1
            out.append(")")
        else:
            out.append(re.escape(char))
        i += 1
    out.append(")" * braces)
    try:
        return compile_pattern("".join(out) + r"\Z", regex.DOTALL)
    except ValueError:
        raise _Refused(f"Invalid glob pattern {pattern!r}.") from None


def _has_magic(part: str) -> bool:
    return any(char in part for char in "*?[{")


# --- walking -------------------------------------------------------------------------------


@dataclass
class _Budget:
    """What one call may still walk and read, and what it skipped."""

    max_entries: int
    max_bytes: int
    stop: threading.Event
    # Seconds of matching left, and the error when they run out.
    seconds: float
    too_slow: str
    entries: int = 0
    bytes: int = 0
    walk_cut: bool = False
    bytes_cut: bool = False
    too_deep: int = 0
    too_big: int = 0
    binary: int = 0
    unreadable: int = 0
    links: int = 0
    matches_tried: int = 0
    # Whether grep may still search a file's text whole; the first timeout there ends that.
    whole_text: bool = True
    trial_seconds: float = field(init=False)

    def __post_init__(self) -> None:
        self.trial_seconds = self.seconds / 4

    def check(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    def search(self, pattern: Compiled, text: str) -> bool:
        """Whether pattern occurs in text, within the call's matching time."""
        self._before_match()
        started = time.monotonic()
        try:
            return pattern.search(text, timeout=self.seconds, concurrent=True) is not None
        except TimeoutError:
            raise _Refused(self.too_slow) from None
        finally:
            self.seconds -= time.monotonic() - started

    def match(self, pattern: Compiled, text: str) -> bool:
        """Whether pattern matches at the start of text, within the call's matching time."""
        self._before_match()
        started = time.monotonic()
        try:
            return pattern.match(text, timeout=self.seconds, concurrent=True) is not None
        except TimeoutError:
            raise _Refused(self.too_slow) from None
        finally:
            self.seconds -= time.monotonic() - started

    def count(self, pattern: Compiled, text: str) -> int:
        """How many times pattern occurs in text, within the call's matching time."""
        self._before_match()
        started = time.monotonic()
        try:
            # The timeout covers the whole iteration, not each step.
            return sum(1 for _ in pattern.finditer(text, timeout=self.seconds, concurrent=True))
        except TimeoutError:
            raise _Refused(self.too_slow) from None
        finally:
            self.seconds -= time.monotonic() - started

    def spans(self, pattern: Compiled, text: str) -> list[tuple[int, int]]:
        """Where pattern occurs in text, within the call's matching time."""
        self._before_match()
        started = time.monotonic()
        try:
            found = pattern.finditer(text, timeout=self.seconds, concurrent=True)
            return [(hit.start(), hit.end()) for hit in found]
        except TimeoutError:
            raise _Refused(self.too_slow) from None
        finally:
            self.seconds -= time.monotonic() - started

    def spans_from(
        self, pattern: Compiled, text: str, pos: int
    ) -> Generator[tuple[int, int], None, None]:
        """Where pattern matches in the whole text from pos on (close it when done).

        Raises _LineByLine when the search takes longer than a quarter of the call's matching
        time: a pattern whose classes cross newlines can be far slower on a whole file than on
        its lines, and that is no reason to refuse it.
        """
        self._before_match()
        limit = min(self.seconds, self.trial_seconds)
        started = time.monotonic()
        try:
            # The timeout covers the whole iteration, not each step.
            for found in pattern.finditer(text, pos, timeout=limit, concurrent=True):
                yield found.start(), found.end()
        except TimeoutError:
            self.whole_text = False
            raise _LineByLine from None
        finally:
            self.seconds -= time.monotonic() - started

    def _before_match(self) -> None:
        # A file of short lines is many quick matches: look for a cancel now and then.
        self.matches_tried += 1
        if self.matches_tried % 256 == 0:
            self.check()
        if self.seconds <= 0:
            raise _Refused(self.too_slow)

    def notices(self, max_file_size: int) -> list[str]:
        said: list[str] = []
        if self.walk_cut:
            said.append(
                f"Stopped after walking {self.max_entries} entries (max_files): results are"
                + " incomplete; narrow path, glob or pattern."
            )
        if self.bytes_cut:
            said.append(
                f"Stopped after reading {self.max_bytes} bytes (max_bytes_scanned): results"
                + " are incomplete; narrow path or glob."
            )
        if self.too_big:
            said.append(
                f"Skipped {self.too_big} file(s) larger than {max_file_size} bytes"
                + " (max_file_size)."
            )
        if self.too_deep:
            said.append(f"Skipped {self.too_deep} folder(s) nested deeper than {MAX_DEPTH}.")
        if self.binary:
            said.append(f"Skipped {self.binary} binary file(s).")
        if self.links:
            said.append(f"Skipped {self.links} symbolic link(s): links are not followed.")
        if self.unreadable:
            said.append(f"Skipped {self.unreadable} unreadable entr(ies).")
        return said


@dataclass(frozen=True)
class _Entry:
    """One walked entry: where it is relative to the searched folder, and its own stat."""

    rel: str
    name: str
    dir_fd: int
    info: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.info.st_mode)


@dataclass
class _Walk:
    """A depth-first walk below one folder that never follows a symbolic link."""

    base: Path
    budget: _Budget
    skip_names: frozenset[str]
    # Names the first levels must have (a glob's literal leading folders).
    only: Sequence[str] = ()
    max_depth: int | None = None
    _open: list[int] = field(default_factory=list)

    def entries(self) -> Generator[_Entry, None, None]:
        try:
            fd = os.open(self.base, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
        except OSError:
            raise _Refused("Cannot open the folder to search.") from None
        self._open.append(fd)
        try:
            yield from self._below(fd, "", 0)
        finally:
            for open_fd in reversed(self._open):
                os.close(open_fd)
            self._open.clear()

    def _below(self, dir_fd: int, rel: str, depth: int) -> Generator[_Entry, None, None]:
        budget = self.budget
        try:
            with os.scandir(dir_fd) as listing:
                names = []
                for item in listing:
                    budget.check()
                    if budget.entries >= budget.max_entries:
                        budget.walk_cut = True
                        break
                    budget.entries += 1
                    names.append(item.name)
        except OSError:
            budget.unreadable += 1
            return
        for name in sorted(names):
            budget.check()
            if depth < len(self.only) and name != self.only[depth]:
                continue
            if name in self.skip_names:
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                budget.unreadable += 1
                continue
            if stat.S_ISLNK(info.st_mode):
                budget.links += 1
                continue
            child_rel = f"{rel}/{name}" if rel else name
            entry = _Entry(child_rel, name, dir_fd, info)
            yield entry
            if not entry.is_dir or (self.max_depth is not None and depth + 1 >= self.max_depth):
                continue
            if depth + 1 >= MAX_DEPTH:
                budget.too_deep += 1
                continue
            try:
                child = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
            except OSError:
                # Gone, unreadable, or swapped for a link since the stat.
                budget.unreadable += 1
                continue
            self._open.append(child)
            try:
                yield from self._below(child, child_rel, depth + 1)
            finally:
                self._open.remove(child)
                os.close(child)


def _read_text(
    name: str | Path, dir_fd: int | None, budget: _Budget, max_file_size: int
) -> str | None:
    """The file as text, or None when it is skipped (too big, binary, unreadable, a link)."""
    if budget.bytes >= budget.max_bytes:
        budget.bytes_cut = True
        return None
    try:
        # O_NONBLOCK so a FIFO in the tree cannot hang the worker thread.
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=dir_fd)
    except OSError:
        budget.unreadable += 1
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > max_file_size:
            budget.too_big += 1
            return None
        allowed = min(max_file_size, budget.max_bytes - budget.bytes)
        chunks: list[bytes] = []
        remaining = allowed + 1
        while remaining > 0:
            budget.check()
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError:
        budget.unreadable += 1
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    budget.bytes += len(data)
    if len(data) > allowed:
        # Grew past the cap since fstat, or the call's byte budget ran out mid-file.
        if allowed < max_file_size:
            budget.bytes_cut = True
        else:
            budget.too_big += 1
        return None
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        budget.binary += 1
        return None
    return data.decode("utf-8", errors="replace")


# --- the tools -----------------------------------------------------------------------------


def _clip(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    return line[:MAX_LINE_CHARS] + f"… [{len(line) - MAX_LINE_CHARS} more characters]"


def _optional_string(arguments: Mapping[str, Any], key: str) -> str | None:
    value = arguments.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refused(f"Argument {key!r} must be a string, not {type(value).__name__}.")
    return value


def _flag(arguments: Mapping[str, Any], key: str, default: bool) -> bool:
    value = arguments.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _Refused(f"Argument {key!r} must be true or false.")
    return value


def _count(arguments: Mapping[str, Any], key: str) -> int | None:
    value = arguments.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Refused(f"Argument {key!r} must be a non-negative integer.")
    return value


def _required_pattern(arguments: Mapping[str, Any]) -> str:
    pattern = _optional_string(arguments, "pattern")
    if not pattern:
        raise _Refused("Pattern is required")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _Refused(f"The pattern is longer than {MAX_PATTERN_CHARS} characters.")
    if "\x00" in pattern:
        raise _Refused("The pattern must not contain NUL characters.")
    return pattern


class SearchTool:
    """The glob and grep tools, confined to the session's sandbox."""

    CONFIG_KEYS: frozenset[str] = frozenset(
        {
            "allowed_paths",
            "max_results",
            "default_limits",
            "max_file_size",
            "max_files",
            "max_bytes_scanned",
            "exclusions",
            "regex_timeout_seconds",
        }
    )

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        self._workspace = sandbox.workspace
        self.roots = _search_roots(config, sandbox)
        self.max_results = _positive_int(config, "max_results", DEFAULT_MAX_RESULTS)
        self.limits = _limits(config, self.max_results)
        self.max_file_size = _positive_int(config, "max_file_size", DEFAULT_MAX_FILE_SIZE)
        self.max_files = _positive_int(config, "max_files", DEFAULT_MAX_FILES)
        self.max_bytes_scanned = _positive_int(
            config, "max_bytes_scanned", DEFAULT_MAX_BYTES_SCANNED
        )
        self.exclusions = _exclusions(config)
        self.regex_timeout = _seconds(
            config, "regex_timeout_seconds", DEFAULT_REGEX_TIMEOUT_SECONDS
        )

    @staticmethod
    def check_config(config: Mapping[str, Any], sandbox: Sandbox) -> list[tuple[str, str]]:
        """Problems with a bundle's folders for this tool, as (config key, message) pairs."""
        try:
            _search_roots(config, sandbox)
        except ValueError as exc:
            return [("allowed_paths", str(exc))]
        return []

    def specs(self) -> Sequence[ToolSpec]:
        """The glob and grep tools, with Amplifier's names, descriptions and schemas."""
        limits = self.limits
        return (
            ToolSpec(
                "glob",
                "\n- Fast file pattern matching tool that works with any codebase size"
                + '\n- Supports glob patterns like "**/*.js" or "src/**/*.ts"'
                + "\n- Returns matching file paths sorted by modification time"
                + "\n- Use this tool when you need to find files by name patterns"
                + "\n- When you are doing an open ended search that may require multiple"
                + " rounds of globbing and grepping, use the task tool instead"
                + "\n- You can call multiple tools in a single response. It is always better"
                + " to speculatively perform multiple searches in parallel if they are"
                + " potentially useful."
                + "\n\nSCOPE AND LIMITS:"
                + "\n- By default, excludes common non-source directories: node_modules,"
                + " .venv, .git, __pycache__, build dirs"
                + f"\n- Results are limited to {self.max_results} files by default to"
                + " prevent context overflow"
                + "\n- Set `include_ignored: true` to search excluded directories"
                + "\n- Response includes `total_files` to know if results were capped"
                + f"\n- Paths are relative to the workspace; searchable: {self._shown_roots()}",
                {
                    "type": "object",
                    "properties": {
                        "pattern": {
                            "type": "string",
                            "description": "Glob pattern to match files (e.g., '**/*.py')",
                        },
                        "path": {
                            "type": "string",
                            "description": "Base path to search from (default: current"
                            + " directory)",
                        },
                        "type": {
                            "type": "string",
                            "enum": ["file", "dir", "any"],
                            "description": "Filter by type: file, dir, or any (default: file)",
                        },
                        "exclude": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Patterns to exclude from results",
                        },
                        "include_ignored": {
                            "type": "boolean",
                            "description": "Search in normally-excluded directories"
                            + " (node_modules, .venv, .git, etc.). Default: false.",
                        },
                    },
                    "required": ["pattern"],
                },
            ),
            ToolSpec(
                "grep",
                "\nSearch file contents with regex patterns (Python regular expressions)."
                + "\n\nCAPABILITIES:"
                + '\n- Full regex syntax (e.g., "log.*Error", "function\\s+\\w+")'
                + '\n- Filter by glob pattern (e.g., "*.js", "**/*.tsx") or file type'
                + ' (e.g., "py", "js", "rust")'
                + '\n- Output modes: "files_with_matches" (default), "content" (with line'
                + ' content), "count"'
                + "\n- Multiline matching with `multiline: true` for patterns spanning lines"
                + "\n\nSCOPE AND LIMITS:"
                + "\n- By default, excludes common non-source directories: node_modules,"
                + " .venv, .git, __pycache__, build dirs"
                + f"\n- Results are limited by default ({limits['files_with_matches']}"
                + f" files/counts, {limits['content']} content matches) to prevent context"
                + " overflow"
                + "\n- Set `include_ignored: true` to search excluded directories"
                + "\n- Set explicit `head_limit: 0` for the most results allowed"
                + f" ({self.max_results})"
                + f"\n- Files over {self.max_file_size} bytes and binary files are skipped"
                + f"\n- A call may spend {_seconds_text(self.regex_timeout)} s matching in all;"
                + " a slower pattern is an error: simplify it"
                + "\n\nPATTERN SYNTAX:"
                + "\n- Literal braces need escaping: `interface\\{\\}` to find `interface{}`"
                + "\n- Case insensitive: use `-i: true`"
                + "\n- Context lines: use `-A`, `-B`, or `-C` parameters with content mode"
                + "\n\nPAGINATION:"
                + "\n- Use `head_limit` and `offset` for pagination"
                + "\n- Response includes `total_matches` to know how many exist beyond the"
                + " limit"
                + f"\n\nPaths are relative to the workspace; searchable: {self._shown_roots()}",
                {
                    "type": "object",
                    "properties": {
                        "pattern": {
                            "type": "string",
                            "description": "The regular expression pattern to search for in"
                            + " file contents",
                        },
                        "path": {
                            "type": "string",
                            "description": "File or directory to search in (rg PATH)."
                            + " Defaults to current working directory.",
                        },
                        "output_mode": {
                            "type": "string",
                            "description": 'Output mode: "content" shows matching lines'
                            + " (supports -A/-B/-C context, -n line numbers, head_limit),"
                            + ' "files_with_matches" shows file paths (supports head_limit),'
                            + ' "count" shows match counts (supports head_limit). Defaults to'
                            + ' "files_with_matches".',
                            "enum": list(OUTPUT_MODES),
                        },
                        "-i": {
                            "type": "boolean",
                            "description": "Case insensitive search (rg -i)",
                        },
                        "-n": {
                            "type": "boolean",
                            "description": "Show line numbers in output (rg -n). Requires"
                            + ' output_mode: "content", ignored otherwise. Defaults to true.',
                        },
                        "-A": {
                            "type": "integer",
                            "description": "Number of lines to show after each match (rg -A)."
                            + ' Requires output_mode: "content", ignored otherwise.',
                        },
                        "-B": {
                            "type": "integer",
                            "description": "Number of lines to show before each match"
                            + ' (rg -B). Requires output_mode: "content", ignored otherwise.',
                        },
                        "-C": {
                            "type": "integer",
                            "description": "Number of lines to show before and after each"
                            + ' match (rg -C). Requires output_mode: "content", ignored'
                            + " otherwise.",
                        },
                        "glob": {
                            "type": "string",
                            "description": 'Glob pattern to filter files (e.g. "*.js",'
                            + ' "*.{ts,tsx}") - maps to rg --glob',
                        },
                        "type": {
                            "type": "string",
                            "description": "File type to search (rg --type). Valid types: py,"
                            + " js, ts, go, rust, java, c, cpp, rb, sh, md, json, yaml, html,"
                            + " css, xml, php, sql, swift, lua, toml, txt. Also accepts"
                            + " aliases like 'python', 'typescript', 'javascript', 'ruby',"
                            + " 'markdown'.",
                        },
                        "multiline": {
                            "type": "boolean",
                            "description": "Enable multiline mode where . matches newlines"
                            + " and patterns can span lines (rg -U --multiline-dotall)."
                            + " Default: false.",
                        },
                        "head_limit": {
                            "type": "integer",
                            "description": "Limit output to first N entries. Default limits"
                            + " apply per mode (200 files/counts, 500 content). Set to 0 for"
                            + " unlimited (use with caution). Use with total_matches field"
                            + " for pagination.",
                        },
                        "offset": {
                            "type": "integer",
                            "description": "Skip first N entries before applying head_limit."
                            + " Default: 0. Use with head_limit for pagination.",
                        },
                        "include_ignored": {
                            "type": "boolean",
                            "description": "Search in normally-excluded directories"
                            + " (node_modules, .venv, .git, etc.). Default: false.",
                        },
                    },
                    "required": ["pattern"],
                },
            ),
        )

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs one tool; every failure is returned as an error result, never raised."""
        work: Callable[[Mapping[str, Any], threading.Event], dict[str, Any]]
        if name == "glob":
            work = self._glob
        elif name == "grep":
            work = self._grep
        else:
            return ToolResult(
                f"Unknown tool {name!r}; this module offers glob and grep.", is_error=True
            )
        stop = threading.Event()
        try:
            output = await asyncio.to_thread(work, arguments, stop)
        except asyncio.CancelledError:
            # The thread cannot be killed; it checks this between entries and gives up.
            stop.set()
            raise
        except _Refused as exc:
            return ToolResult(str(exc), is_error=True)
        except Exception as exc:
            # The type alone: an unexpected error's text could name paths outside the roots.
            return ToolResult(f"{name} failed: {type(exc).__name__}.", is_error=True)
        return ToolResult(json.dumps(output, ensure_ascii=False))

    # --- paths -------------------------------------------------------------------------

    def _shown(self, path: Path) -> str:
        # The model sees workspace paths relative to it: the host layout is none of its business.
        if path.is_relative_to(self._workspace):
            relative = path.relative_to(self._workspace).as_posix()
            return relative
        return str(path)

    def _shown_roots(self) -> str:
        return ", ".join(self._shown(root) or "." for root in self.roots)

    def _joined(self, base: Path, rel: str) -> str:
        shown = self._shown(base)
        if not shown or shown == ".":
            return rel
        return f"{shown.rstrip('/')}/{rel}" if rel else shown

    def _locate(self, given: str | None) -> Path:
        """The search path argument, resolved, and checked to lie under one of the roots."""
        given = given or "."
        if "\x00" in given:
            raise _Refused("The path must not contain NUL characters.")
        candidate = Path(given)
        if not candidate.is_absolute():
            candidate = self._workspace / candidate
        try:
            resolved = candidate.resolve(strict=False)
        except (OSError, RuntimeError):
            raise _Refused(f"Cannot resolve {given!r}.") from None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise _Refused(
                f"Access denied: {given!r} is outside the directories allowed for searching."
            )
        try:
            exists = resolved.exists()
        except OSError:
            exists = False
        if not exists:
            raise _Refused(f"Path not found: {given}")
        return resolved

    def _budget(self, stop: threading.Event, what: str, hint: str = "") -> _Budget:
        limit = _seconds_text(self.regex_timeout)
        return _Budget(
            self.max_files,
            self.max_bytes_scanned,
            stop,
            self.regex_timeout,
            f"{what} took too long (more than {limit} s of matching in this call):"
            + f" simplify it{hint}.",
        )

    # --- glob ----------------------------------------------------------------------------

    def _glob(self, arguments: Mapping[str, Any], stop: threading.Event) -> dict[str, Any]:
        pattern = _required_pattern(arguments)
        given = _optional_string(arguments, "path")
        kind = _optional_string(arguments, "type") or "file"
        if kind not in ("file", "dir", "any"):
            raise _Refused("Argument 'type' must be one of file, dir, any.")
        exclude = arguments.get("exclude") or []
        if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
            raise _Refused("Argument 'exclude' must be a list of glob patterns.")
        include_ignored = _flag(arguments, "include_ignored", False)
        parts = [part for part in pattern.split("/") if part not in ("", ".")]
        if pattern.startswith("/") or Path(pattern).is_absolute():
            raise _Refused("The pattern must be relative; name the folder with `path`.")
        if ".." in parts:
            raise _Refused("The pattern must not contain '..'; name the folder with `path`.")
        if not parts:
            raise _Refused("Pattern is required")
        base = self._locate(given)
        if not base.is_dir():
            raise _Refused(f"{given!r} is not a directory.")
        matcher = glob_regex("/".join(parts), anywhere=False)
        excluded = [glob_regex(e, anywhere=True) for e in exclude if e]
        # Only the literal leading folders need walking, and no deeper than the pattern
        # reaches unless it has `**`.
        literal: list[str] = []
        for part in parts[:-1]:
            if _has_magic(part):
                break
            literal.append(part)
        if not _has_magic(parts[-1]) and len(literal) == len(parts) - 1:
            literal.append(parts[-1])
        deep = any("**" in part for part in parts)
        budget = self._budget(stop, "The glob pattern")
        walk = _Walk(
            base,
            budget,
            frozenset() if include_ignored else self.exclusions,
            only=literal,
            max_depth=None if deep else len(parts),
        )
        found: list[tuple[float, dict[str, Any]]] = []
        with contextlib.closing(walk.entries()) as entries:
            for entry in entries:
                if not budget.match(matcher, entry.rel):
                    continue
                if kind == "file" and not stat.S_ISREG(entry.info.st_mode):
                    continue
                if kind == "dir" and not entry.is_dir:
                    continue
                if any(budget.match(rule, entry.rel) for rule in excluded):
                    continue
                found.append(
                    (
                        entry.info.st_mtime,
                        {
                            "path": self._joined(base, entry.rel),
                            "type": "dir" if entry.is_dir else "file",
                            "size": None if entry.is_dir else entry.info.st_size,
                        },
                    )
                )
        # Newest first, as the description promises; the name breaks ties for a stable order.
        found.sort(key=lambda item: (-item[0], item[1]["path"]))
        matches = [info for _, info in found[: self.max_results]]
        output: dict[str, Any] = {
            "pattern": pattern,
            "base_path": self._shown(base) or ".",
            "total_files": len(found),
            "count": len(matches),
            "matches": matches,
        }
        notices = budget.notices(self.max_file_size)
        if len(found) > len(matches):
            output["results_capped"] = True
            notices.insert(
                0,
                f"Showing {len(matches)} of {len(found)} matches (max_results); narrow the"
                + " pattern or path for the rest.",
            )
        if notices:
            output["notice"] = " ".join(notices)
        return output

    # --- grep ----------------------------------------------------------------------------

    def _grep(self, arguments: Mapping[str, Any], stop: threading.Event) -> dict[str, Any]:
        pattern = _required_pattern(arguments)
        mode = _optional_string(arguments, "output_mode") or "files_with_matches"
        if mode not in OUTPUT_MODES:
            raise _Refused(f"Argument 'output_mode' must be one of {', '.join(OUTPUT_MODES)}.")
        multiline = _flag(arguments, "multiline", False)
        flags = regex.IGNORECASE if _flag(arguments, "-i", False) else 0
        if multiline:
            flags |= regex.MULTILINE | regex.DOTALL
        try:
            compiled = _GrepPattern(
                compile_pattern(pattern, flags),
                compile_pattern(pattern, flags | regex.MULTILINE)
                if not multiline and _line_safe(pattern)
                else None,
            )
        except ValueError as exc:
            raise _Refused(f"Invalid regex pattern: {exc}") from None
        numbers = _flag(arguments, "-n", True)
        after = _count(arguments, "-A") or 0
        before = _count(arguments, "-B") or 0
        around = _count(arguments, "-C")
        if around is not None:
            before = after = around
        before, after = min(before, MAX_CONTEXT_LINES), min(after, MAX_CONTEXT_LINES)
        if mode != "content":
            before = after = 0
        offset = _count(arguments, "offset") or 0
        head_limit = _count(arguments, "head_limit")
        limit = self.limits[mode] if head_limit is None else head_limit
        if limit == 0 or limit > self.max_results:
            limit = self.max_results
        filters = self._file_filters(arguments)
        include_ignored = _flag(arguments, "include_ignored", False)
        given = _optional_string(arguments, "path")
        base = self._locate(given)
        budget = self._budget(stop, "The regular expression", ", or narrow path or glob")

        # Everything is counted, but only the requested page is kept.
        window_end = offset + limit
        total = 0
        kept: list[Any] = []
        counts: dict[str, int] = {}
        files_seen = 0
        for shown, text in self._files(base, filters, include_ignored, budget):
            if mode == "content":
                results = _line_results(
                    text, compiled, budget, multiline, shown, numbers, before, after
                )
                for result in results:
                    if offset <= total < window_end:
                        kept.append(result)
                    total += 1
            else:
                found = _match_count(
                    text, compiled, budget, multiline, stop_at_first=mode != "count"
                )
                if not found:
                    continue
                if mode == "files_with_matches":
                    if offset <= total < window_end:
                        kept.append(shown)
                    total += 1
                else:
                    if offset <= files_seen < window_end:
                        counts[shown] = found
                    files_seen += 1
                    total += found
        output: dict[str, Any] = {"pattern": pattern, "output_mode": mode}
        output["total_matches"] = total
        if mode == "content":
            output["matches_count"] = len(kept)
            output["results"] = kept
            capped = total > offset + len(kept)
            listed, available = len(kept), total
        elif mode == "files_with_matches":
            output["matches_count"] = len(kept)
            output["files"] = kept
            capped = total > offset + len(kept)
            listed, available = len(kept), total
        else:
            output["matches_count"] = sum(counts.values())
            output["counts"] = counts
            capped = files_seen > offset + len(counts)
            listed, available = len(counts), files_seen
        notices = budget.notices(self.max_file_size)
        if capped:
            output["results_capped"] = True
            notices.insert(
                0,
                f"Showing entries {offset + 1}-{offset + listed} of {available}; pass"
                + f" offset={offset + listed} for more.",
            )
        if notices:
            output["notice"] = " ".join(notices)
        return output

    def _file_filters(self, arguments: Mapping[str, Any]) -> list[Compiled]:
        """The glob and type arguments as patterns every searched file must match."""
        filters: list[Compiled] = []
        glob = _optional_string(arguments, "glob")
        if glob:
            filters.append(glob_regex(glob, anywhere=True))
        wanted = _optional_string(arguments, "type")
        if wanted:
            key = TYPE_ALIASES.get(wanted.lower(), wanted.lower())
            globs = TYPE_GLOBS.get(key)
            if globs is None:
                raise _Refused(
                    f"Unrecognized file type: {wanted!r}. Valid types:"
                    + f" {', '.join(sorted(TYPE_GLOBS))}. Also accepts aliases:"
                    + f" {', '.join(sorted(TYPE_ALIASES))}."
                )
            filters.append(glob_regex("{" + ",".join(globs) + "}", anywhere=True))
        return filters

    def _files(
        self,
        base: Path,
        filters: Sequence[Compiled],
        include_ignored: bool,
        budget: _Budget,
    ) -> Iterator[tuple[str, str]]:
        """(shown path, text) of every searchable file at or below base."""
        if not base.is_dir():
            # One file named by the call: its own name is what the filters see.
            if all(budget.match(rule, base.name) for rule in filters):
                text = _read_text(base, None, budget, self.max_file_size)
                if text is not None:
                    yield self._shown(base), text
            return
        walk = _Walk(base, budget, frozenset() if include_ignored else self.exclusions)
        with contextlib.closing(walk.entries()) as entries:
            for entry in entries:
                if not stat.S_ISREG(entry.info.st_mode):
                    continue
                if not all(budget.match(rule, entry.rel) for rule in filters):
                    continue
                if entry.info.st_size > self.max_file_size:
                    budget.too_big += 1
                    continue
                text = _read_text(entry.name, entry.dir_fd, budget, self.max_file_size)
                if budget.bytes_cut:
                    return
                if text is not None:
                    yield self._joined(base, entry.rel), text


def _seconds_text(seconds: float) -> str:
    return f"{seconds:g}"


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


@dataclass(frozen=True)
class _GrepPattern:
    """The model's pattern, and the same with MULTILINE when whole texts may stand for lines."""

    line: Compiled
    whole: Compiled | None


# What can look past the edges of a match: lookarounds, inline flags, conditionals and other
# `(?...)` groups, verbs such as `(*SKIP)`, and the string anchors `\A`, `\Z`, `\z`, `\G`, `\K`.
_LOOKS_AROUND = re.compile(r"\(\?(?!:)|\(\*|\\[AZzGK]")


def _line_safe(pattern: str) -> bool:
    """Whether a match of pattern within one line of a text is exactly a match in that line alone.

    With MULTILINE, `^` and `$` meet a line's edges in the text as at a string's, and `\\b`
    sees a newline as it sees an edge; only what the check refuses can tell the two apart.
    """
    return _LOOKS_AROUND.search(pattern) is None


def _matching_lines(
    lines: list[str], pattern: _GrepPattern, budget: _Budget, first_only: bool
) -> list[int]:
    """Indexes of the lines that pattern matches, each line taken on its own."""
    if pattern.whole is not None and budget.whole_text:
        with contextlib.suppress(_LineByLine):
            return _matching_lines_in_text(lines, pattern.line, pattern.whole, budget, first_only)
    found: list[int] = []
    for index, line in enumerate(lines):
        if budget.search(pattern.line, line):
            found.append(index)
            if first_only:
                break
    return found


def _matching_lines_in_text(
    lines: list[str], line_pattern: Compiled, whole: Compiled, budget: _Budget, first_only: bool
) -> list[int]:
    """_matching_lines with one search of the joined text rather than one per line.

    Each timed search costs microseconds however short the line, and most lines match nothing.
    A match within one line is a match of that line; one that spans lines leaves each of them
    to be searched alone. No matching line is missed: every search finds the leftmost match
    after the last, which either lies before a line's own match or covers it.
    """
    text = "\n".join(lines)
    starts = list(itertools.accumulate((len(line) + 1 for line in lines), initial=0))
    matched: list[int] = []
    unsure: list[int] = []
    pos = 0
    while pos <= len(text):
        restart: int | None = None
        with contextlib.closing(budget.spans_from(whole, text, pos)) as spans:
            for start, end in spans:
                first = bisect.bisect_right(starts, start) - 1
                if first >= len(lines):
                    break
                if text.find("\n", start, end) != -1:
                    last = bisect.bisect_right(starts, end - 1) - 1
                    unsure.extend(range(first, min(last, len(lines) - 1) + 1))
                elif matched and matched[-1] == first:
                    # A line's further matches tell nothing, and a pattern such as `\s` or `x*`
                    # has dozens: go on from the next line instead.
                    restart = starts[first + 1]
                    break
                else:
                    matched.append(first)
                    if first_only:
                        return matched
        if restart is None:
            break
        pos = restart
    known = set(matched)
    for index in unsure:
        if index not in known and budget.search(line_pattern, lines[index]):
            known.add(index)
            if first_only:
                break
    return sorted(known)


def _match_count(
    text: str, pattern: _GrepPattern, budget: _Budget, multiline: bool, stop_at_first: bool
) -> int:
    """Matching lines (or, in multiline mode, matches) in text; 1 at most with stop_at_first."""
    if multiline:
        if stop_at_first:
            return 1 if budget.search(pattern.line, text) else 0
        return budget.count(pattern.line, text)
    return len(_matching_lines(_split_lines(text), pattern, budget, stop_at_first))


def _line_results(
    text: str,
    pattern: _GrepPattern,
    budget: _Budget,
    multiline: bool,
    shown: str,
    numbers: bool,
    before: int,
    after: int,
) -> Iterator[dict[str, Any]]:
    """One content result per matching line (per match in multiline mode)."""
    lines = _split_lines(text)
    hits: list[tuple[int, int]] = []  # first and last line (0-based) of each match
    if multiline:
        # Offsets come from the raw text, so a CRLF file maps matches to the right lines.
        starts = [0]
        for raw in text.split("\n"):
            starts.append(starts[-1] + len(raw) + 1)
        final = max(0, len(lines) - 1)
        for start, end in budget.spans(pattern.line, text):
            first = min(_line_at(starts, start), final)
            last = min(_line_at(starts, max(start, end - 1)), final)
            hits.append((first, last))
    else:
        hits = [(i, i) for i in _matching_lines(lines, pattern, budget, first_only=False)]
    for first, last in hits:
        result: dict[str, Any] = {
            "file": shown,
            "content": _clip("\n".join(lines[first : last + 1])),
        }
        if numbers:
            result["line_number"] = first + 1
        if before or after:
            start, end = max(0, first - before), min(len(lines), last + 1 + after)
            result["context"] = [
                {"line_number": j + 1, "content": _clip(lines[j]), "is_match": first <= j <= last}
                for j in range(start, end)
            ]
        yield result


def _line_at(starts: Sequence[int], position: int) -> int:
    low, high = 0, len(starts) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if starts[middle] <= position:
            low = middle
        else:
            high = middle - 1
    return low
