"""Applies patches (adding, changing, deleting and renaming files) inside the session's sandbox.

The tool follows Amplifier's tool-apply-patch module (its "function" engine): one tool,
`apply_patch`, taking one `patch` argument in the V4A format (`*** Begin Patch` ...
`*** End Patch`, with `*** Add File:`, `*** Update File:` (optionally `*** Move to:`) and
`*** Delete File:` sections). Unified diffs, as `diff -u` and `git diff` print them
(`--- a/x` / `+++ b/x` headers and `@@ -l,n +l,n @@` hunks; `/dev/null` for created and
deleted files), are accepted in the same argument. The result is a git-style summary, one
line per file: `A path`, `M path`, `D path` or `R old -> new`.

Matching tolerates what Amplifier's does: a hunk's context is looked for exactly, then
ignoring trailing whitespace, then ignoring surrounding whitespace; a unified hunk whose line
numbers are off is found by its content (nearest to the numbers given).

A patch is atomic: every file's new content is computed in memory and every hunk checked
first; then each file is written to a temporary file beside it and moved into place. If a
write fails, the files already changed are put back, so either every file of the patch
changes or none does.

Config keys (Amplifier's names; see CONFIG_KEYS):

- `allowed_write_paths`: the folders a patch may touch (default: the workspace). Relative
  ones are taken from the workspace; each must lie in the sandbox.
- `denied_write_paths`: folders (or files) inside those that a patch may not touch.

Every path in a patch is resolved (symlinks included) and must lie under an allowed folder
and outside the denied ones; files are read with O_NOFOLLOW, so neither `..` nor a symlink
reaches outside. Error messages name only the paths the patch gave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from session_service.turns.protocols import ToolResult, ToolSpec
from session_service.workspace import Sandbox, configured_folders

# The largest file a patch may read or produce: patches are for text, not data.
MAX_FILE_BYTES = 8 * 1024 * 1024
# Lines of a failed hunk quoted back in the error, at most.
QUOTED_LINES = 12

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

_BEGIN = "*** Begin Patch"
_END = "*** End Patch"
_ADD = "*** Add File: "
_UPDATE = "*** Update File: "
_DELETE = "*** Delete File: "
_MOVE = "*** Move to: "
_EOF = "*** End of File"
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(Exception):
    """The patch cannot be applied; the message is safe to show the model."""


# --- the parsed patch ----------------------------------------------------------------------

Op = Literal[" ", "-", "+"]
_OPS: Mapping[str, Op] = {" ": " ", "-": "-", "+": "+"}


@dataclass
class Hunk:
    """One run of context, removed and added lines, and where to look for it."""

    lines: list[tuple[Op, str]] = field(default_factory=list)
    # V4A: a line (`@@ def f():`) the hunk comes after.
    anchor: str = ""
    # V4A: the hunk ends the file (`*** End of File`).
    eof: bool = False
    # Unified: the 0-based line the old side starts at, as the header says.
    hint: int | None = None
    # Unified: `\ No newline at end of file` after the old / new side's last line.
    old_no_newline: bool = False
    new_no_newline: bool = False
    header: str = ""

    @property
    def old(self) -> list[str]:
        return [text for op, text in self.lines if op != "+"]

    @property
    def new(self) -> list[str]:
        return [text for op, text in self.lines if op != "-"]


@dataclass
class FileChange:
    """What the patch does to one file."""

    kind: Literal["add", "update", "delete"]
    path: str
    hunks: list[Hunk] = field(default_factory=list)
    move_to: str | None = None
    # Add File in V4A: the new file's lines.
    content: list[str] = field(default_factory=list)


def parse_patch(text: str) -> list[FileChange]:
    """The file changes of a V4A patch or a unified diff; PatchError if it is neither."""
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PatchError("The patch is empty.")
    if lines[0].strip().startswith(_BEGIN):
        changes = _parse_v4a(lines)
    elif any(line.startswith(("--- ", "diff --git ")) for line in lines):
        changes = _parse_unified(lines)
    else:
        raise PatchError(
            "The patch must start with '*** Begin Patch' (V4A format) or be a unified diff"
            + " with '--- a/path' and '+++ b/path' headers."
        )
    if not changes:
        raise PatchError("Patch contains no operations")
    return changes


def _parse_v4a(lines: list[str]) -> list[FileChange]:
    changes: list[FileChange] = []
    i = 1
    ended = False
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith(_END):
            ended = True
            break
        if line.startswith(_ADD):
            change = FileChange("add", line[len(_ADD) :].strip())
            i += 1
            while i < len(lines) and not lines[i].startswith("*** "):
                if not lines[i].startswith("+"):
                    raise PatchError(
                        f"In '*** Add File: {change.path}': every line must start with '+'"
                        + f" (line {i + 1}: {lines[i][:80]!r})."
                    )
                change.content.append(lines[i][1:])
                i += 1
            changes.append(change)
        elif line.startswith(_DELETE):
            changes.append(FileChange("delete", line[len(_DELETE) :].strip()))
            i += 1
        elif line.startswith(_UPDATE):
            change = FileChange("update", line[len(_UPDATE) :].strip())
            i += 1
            if i < len(lines) and lines[i].startswith(_MOVE):
                change.move_to = lines[i][len(_MOVE) :].strip()
                i += 1
            i = _parse_v4a_hunks(lines, i, change)
            changes.append(change)
        else:
            raise PatchError(f"Unexpected line {i + 1} of the patch: {line[:80]!r}.")
    if not ended:
        raise PatchError("The patch must end with '*** End Patch'.")
    return changes


def _parse_v4a_hunks(lines: list[str], i: int, change: FileChange) -> int:
    hunk = Hunk()
    started = False

    def close() -> None:
        nonlocal hunk
        if hunk.lines or hunk.anchor:
            if not any(op != " " for op, _ in hunk.lines):
                raise PatchError(
                    f"In '*** Update File: {change.path}', hunk {len(change.hunks) + 1}"
                    + " changes nothing (no '+' or '-' lines)."
                )
            change.hunks.append(hunk)
        hunk = Hunk()

    while i < len(lines):
        raw = lines[i]
        if raw.startswith((_END, _ADD, _UPDATE, _DELETE)):
            break
        if raw.startswith(_EOF):
            hunk.eof = True
            close()
            i += 1
            continue
        if raw.startswith("@@"):
            if hunk.lines:
                close()
            hunk.anchor = raw[2:].strip()
            hunk.header = raw
            started = True
            i += 1
            continue
        if raw.startswith("***"):
            raise PatchError(f"Unexpected line {i + 1} of the patch: {raw[:80]!r}.")
        # An empty line is an empty context line whose leading space was lost.
        line = raw if raw else " "
        op = _OPS.get(line[0])
        if op is None:
            raise PatchError(
                f"In '*** Update File: {change.path}', line {i + 1} must start with ' ', '-'"
                + f" or '+': {raw[:80]!r}."
            )
        hunk.lines.append((op, line[1:]))
        started = True
        i += 1
    close()
    if not started and change.move_to is None:
        raise PatchError(f"'*** Update File: {change.path}' has no changes.")
    return i


def _file_header(lines: Sequence[str], i: int) -> bool:
    """Whether lines[i] starts a unified diff's `--- old` / `+++ new` pair."""
    return lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")


def _git_sides(old: str, new: str) -> bool:
    """Whether a file header names its sides as git does (a/..., b/... or /dev/null)."""
    old_git, new_git = old.startswith("a/"), new.startswith("b/")
    return (old_git and (new_git or new == "/dev/null")) or (new_git and old == "/dev/null")


def _header_path(line: str) -> str:
    path = line[4:]
    # diff -u puts a tab and a timestamp after the name.
    if "\t" in path:
        path = path.split("\t", 1)[0]
    path = path.strip()
    if len(path) >= 2 and path[0] == path[-1] == '"':
        path = path[1:-1]
    return path


def _parse_unified(lines: list[str]) -> list[FileChange]:
    changes: list[FileChange] = []
    # git names the sides a/ and b/; plain diff uses the paths as they are.
    git_style = any(line.startswith("diff --git ") for line in lines) or any(
        _file_header(lines, k) and _git_sides(_header_path(lines[k]), _header_path(lines[k + 1]))
        for k in range(len(lines))
    )
    i = 0
    while i < len(lines):
        line = lines[i]
        if not _file_header(lines, i):
            if changes and line[:1] in ("+", "-", " ") and line.rstrip() != "--":
                # Between files only headers belong (and git's email signature, "-- ").
                raise PatchError(
                    f"In the diff of {changes[-1].path!r}, line {i + 1} is outside any hunk:"
                    + f" {line[:80]!r}. Check the '@@' line before it."
                )
            # git's and diff's preamble lines (diff --git, index, mode lines) carry nothing
            # the hunks do not.
            i += 1
            continue
        old, new = _header_path(line), _header_path(lines[i + 1])
        if git_style:
            old = old[2:] if old.startswith("a/") else old
            new = new[2:] if new.startswith("b/") else new
        elif old == "a/" + new or new == "b/" + old:
            # One side git-style, the other not: the same file.
            old = new = min(old, new, key=len)
        i += 2
        if old == "/dev/null" and new == "/dev/null":
            raise PatchError(f"Line {i - 1}: both sides of the diff are /dev/null.")
        if old == "/dev/null":
            change = FileChange("add", new)
        elif new == "/dev/null":
            change = FileChange("delete", old)
        else:
            change = FileChange("update", old, move_to=new if new != old else None)
        i = _parse_unified_hunks(lines, i, change)
        if change.kind == "update" and not change.hunks and change.move_to is None:
            raise PatchError(f"The diff of {old!r} has no hunks.")
        changes.append(change)
    return changes


def _parse_unified_hunks(lines: list[str], i: int, change: FileChange) -> int:
    while i < len(lines):
        line = lines[i]
        match = _HUNK_HEADER.match(line)
        if match is None:
            if line.startswith("diff --git ") or _file_header(lines, i):
                break
            if not line.strip():
                i += 1
                continue
            if line.startswith("@@"):
                raise PatchError(f"Line {i + 1}: malformed hunk header {line[:80]!r}.")
            if line[0] in " +-":
                raise PatchError(
                    f"In the diff of {change.path!r}, line {i + 1} is outside any hunk:"
                    + f" {line[:80]!r}. Check the '@@' line before it."
                )
            # Anything else (git's mode and index lines) ends this file's hunks.
            break
        old_start = int(match.group(1))
        old_count = int(match.group(2)) if match.group(2) is not None else 1
        new_count = int(match.group(4)) if match.group(4) is not None else 1
        hunk = Hunk(header=line[: match.end()])
        # A count of 0 names the line before the change (0: the start of the file).
        hunk.hint = old_start if old_count == 0 else old_start - 1
        i += 1
        seen_old = seen_new = 0
        last: Op | None = None
        while i < len(lines):
            body = lines[i]
            if body.startswith("\\"):
                # "\ No newline at end of file" qualifies the line before it.
                if last in (" ", "-"):
                    hunk.old_no_newline = True
                if last in (" ", "+"):
                    hunk.new_no_newline = True
                i += 1
                continue
            if body.startswith("@@") or body.startswith("diff --git ") or _file_header(lines, i):
                break
            if not body:
                # Editors and models drop the space of an empty context line; once the
                # header's counts are met, an empty line only separates files.
                if seen_old >= old_count and seen_new >= new_count:
                    break
                body = " "
            op = _OPS.get(body[0])
            if op is None:
                break
            # The header's counts are not trusted beyond that: models often get them wrong.
            hunk.lines.append((op, body[1:]))
            last = op
            if op != "+":
                seen_old += 1
            if op != "-":
                seen_new += 1
            i += 1
        if not hunk.lines:
            raise PatchError(f"In the diff of {change.path!r}, hunk {hunk.header} is empty.")
        change.hunks.append(hunk)
    return i


# --- applying hunks to text ----------------------------------------------------------------


@dataclass
class Text:
    """A text file as lines, with its line ending and whether its last line ends with one."""

    lines: list[str]
    newline: str = "\n"
    final_newline: bool = True

    @classmethod
    def parse(cls, text: str) -> Text:
        newline = "\r\n" if "\r\n" in text else "\n"
        body = text.replace("\r\n", "\n")
        if not body:
            return cls([], newline, True)
        final = body.endswith("\n")
        lines = body.split("\n")
        if final:
            lines.pop()
        return cls(lines, newline, final)

    def render(self) -> str:
        if not self.lines:
            return ""
        return self.newline.join(self.lines) + (self.newline if self.final_newline else "")


def _exact(line: str) -> str:
    return line


def _rstrip(line: str) -> str:
    return line.rstrip()


def _strip(line: str) -> str:
    return line.strip()


_TIERS = (_exact, _rstrip, _strip)


def _nearest(centre: int, low: int, high: int) -> Iterator[int]:
    """low..high, nearest to centre first (the lower of two equally near)."""
    yield centre
    for distance in range(1, max(centre - low, high - centre) + 1):
        if centre - distance >= low:
            yield centre - distance
        if centre + distance <= high:
            yield centre + distance


def _locate(
    lines: Sequence[str], old: Sequence[str], start: int, hint: int | None, eof: bool
) -> int | None:
    """Where old occurs in lines at or after start: exactly, else ignoring whitespace."""
    last = len(lines) - len(old)
    if last < start:
        return None
    if not old:
        if eof:
            return len(lines)
        return start if hint is None else min(max(hint, start), len(lines))
    for tier in _TIERS:
        wanted = [tier(line) for line in old]

        def fits(at: int, wanted: list[str] = wanted, tier: Callable[[str], str] = tier) -> bool:
            return all(tier(lines[at + k]) == wanted[k] for k in range(len(wanted)))

        if eof and fits(last):
            return last
        if hint is None:
            order: Iterable[int] = range(start, last + 1)
        else:
            # Nearest to the line the header names first, as patch(1) does.
            order = _nearest(min(max(hint, start), last), start, last)
        for at in order:
            if fits(at):
                return at
    return None


def _quote(hunk: Hunk) -> str:
    shown = [op + text for op, text in hunk.lines if op != "+"][:QUOTED_LINES]
    more = len([1 for op, _ in hunk.lines if op != "+"]) - len(shown)
    body = "\n".join(shown) + (f"\n... ({more} more lines)" if more > 0 else "")
    return body or "(no context lines)"


def apply_hunks(text: Text, hunks: Sequence[Hunk], label: str) -> Text:
    """text with hunks applied in order; PatchError naming label and the hunk otherwise."""
    lines = text.lines
    out: list[str] = []
    copied = 0  # lines[:copied] are in out already
    search = 0
    final_newline = text.final_newline
    for number, hunk in enumerate(hunks, 1):
        where = f"hunk {number}" + (f" ({hunk.header})" if hunk.header else "")
        if hunk.anchor:
            found = next((k for k in range(search, len(lines)) if lines[k] == hunk.anchor), None)
            if found is None:
                found = next(
                    (
                        k
                        for k in range(search, len(lines))
                        if lines[k].strip() == hunk.anchor.strip()
                    ),
                    None,
                )
            if found is None:
                raise PatchError(
                    f"{label}: {where} does not apply: the line {hunk.anchor!r} it comes"
                    + " after was not found. Read the file and retry."
                )
            search = found + 1
        at = _locate(lines, hunk.old, search, hunk.hint, hunk.eof)
        if at is None:
            raise PatchError(
                f"{label}: {where} does not apply: these lines were not found"
                + (" after the previous hunk" if number > 1 else "")
                + f" (the file may have changed; read it and retry):\n{_quote(hunk)}"
            )
        out.extend(lines[copied:at])
        k = at
        for op, line in hunk.lines:
            if op == " ":
                # The file's own text: a whitespace-tolerant match keeps what is there.
                out.append(lines[k])
                k += 1
            elif op == "-":
                k += 1
            else:
                out.append(line)
        copied = search = k
        if k == len(lines):
            if hunk.new_no_newline:
                final_newline = False
            elif hunk.old_no_newline or hunk.header:
                final_newline = True
    out.extend(lines[copied:])
    return Text(out, text.newline, final_newline)


# --- the tool ------------------------------------------------------------------------------


@dataclass
class _Planned:
    """One file's state: on disk before the patch, and what the patch makes of it."""

    path: Path
    label: str
    original: bytes | None
    mode: int | None
    new: bytes | None


class ApplyPatchTool:
    """The apply_patch tool: V4A patches and unified diffs, applied all or nothing."""

    CONFIG_KEYS: frozenset[str] = frozenset({"allowed_write_paths", "denied_write_paths"})

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        self._workspace = sandbox.workspace
        self.write_roots = configured_folders(config, "allowed_write_paths", sandbox) or (
            sandbox.workspace,
        )
        # Denied paths only narrow: they need not be inside the sandbox to mean something.
        denied = config.get("denied_write_paths")
        if denied is not None and (
            not isinstance(denied, list) or not all(isinstance(d, str) and d for d in denied)
        ):
            raise ValueError("denied_write_paths must be a list of paths")
        self.denied = tuple(
            (Path(d) if Path(d).is_absolute() else sandbox.workspace / d).resolve(strict=False)
            for d in denied or ()
            if "\x00" not in d
        )

    @staticmethod
    def check_config(config: Mapping[str, Any], sandbox: Sandbox) -> list[tuple[str, str]]:
        """Problems with a bundle's folders for this tool, as (config key, message) pairs."""
        problems: list[tuple[str, str]] = []
        try:
            configured_folders(config, "allowed_write_paths", sandbox)
        except ValueError as exc:
            problems.append(("allowed_write_paths", str(exc)))
        denied = config.get("denied_write_paths")
        if denied is not None and (
            not isinstance(denied, list)
            or not all(isinstance(d, str) and d and "\x00" not in d for d in denied)
        ):
            problems.append(("denied_write_paths", "must be a list of non-empty path strings"))
        return problems

    def specs(self) -> Sequence[ToolSpec]:
        """The apply_patch tool, with Amplifier's name, description and schema."""
        return (
            ToolSpec(
                "apply_patch",
                "Apply a patch to files using the V4A diff format. Supports adding,"
                + " updating, deleting, and renaming files in a single patch. The patch must"
                + " be wrapped in '*** Begin Patch' and '*** End Patch' markers."
                + " Unified diffs ('--- a/path' / '+++ b/path' headers with '@@' hunks, as"
                + " git diff prints them) are accepted too. The patch applies atomically:"
                + " if any file or hunk fails, no file is changed. Relative paths are"
                + " resolved against the workspace; parent directories are created.",
                {
                    "type": "object",
                    "properties": {
                        "patch": {
                            "type": "string",
                            "description": "The patch content in V4A format",
                        },
                    },
                    "required": ["patch"],
                },
            ),
        )

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs the tool; every failure is returned as an error result, never raised."""
        if name != "apply_patch":
            return ToolResult(
                f"Unknown tool {name!r}; this module offers apply_patch.", is_error=True
            )
        patch = arguments.get("patch") if isinstance(arguments, Mapping) else None
        if not isinstance(patch, str) or not patch.strip():
            return ToolResult("patch is required", is_error=True)
        try:
            return ToolResult(await asyncio.to_thread(self._apply, patch))
        except PatchError as exc:
            return ToolResult(str(exc), is_error=True)
        except Exception as exc:
            # The type alone: an unexpected error's text could name paths outside the roots.
            return ToolResult(f"apply_patch failed: {type(exc).__name__}.", is_error=True)

    # --- planning ----------------------------------------------------------------------

    def _locate(self, given: str) -> Path:
        if not given:
            raise PatchError("A file section of the patch names no path.")
        if "\x00" in given:
            raise PatchError("A path in the patch contains a NUL character.")
        candidate = Path(given)
        if not candidate.is_absolute():
            candidate = self._workspace / candidate
        try:
            resolved = candidate.resolve(strict=False)
        except (OSError, RuntimeError):
            raise PatchError(f"Cannot resolve {given!r}.") from None
        if not any(resolved.is_relative_to(root) for root in self.write_roots):
            raise PatchError(
                f"Access denied: {given!r} is outside the directories allowed for writing."
            )
        if any(resolved.is_relative_to(denied) for denied in self.denied):
            raise PatchError(f"Access denied: {given!r} is in a directory denied for writing.")
        if resolved in self.write_roots:
            raise PatchError(f"{given!r} is a directory, not a file.")
        return resolved

    def _load(self, path: Path, label: str) -> _Planned:
        """The file as it is on disk (original None when there is none)."""
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        except FileNotFoundError:
            return _Planned(path, label, None, None, None)
        except NotADirectoryError:
            raise PatchError(f"{label!r}: a parent of it is not a directory.") from None
        except OSError as exc:
            if os.path.isdir(path):
                raise PatchError(f"{label!r} is a directory, not a file.") from None
            raise PatchError(
                f"Cannot read {label!r}: {exc.strerror or type(exc).__name__}."
            ) from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise PatchError(f"{label!r} is a directory, not a file.")
            if not stat.S_ISREG(info.st_mode):
                raise PatchError(f"{label!r} is not a regular file.")
            if info.st_size > MAX_FILE_BYTES:
                raise PatchError(f"{label!r} is over the {MAX_FILE_BYTES}-byte patch limit.")
            chunks: list[bytes] = []
            remaining = MAX_FILE_BYTES + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > MAX_FILE_BYTES:
            raise PatchError(f"{label!r} is over the {MAX_FILE_BYTES}-byte patch limit.")
        return _Planned(path, label, data, stat.S_IMODE(info.st_mode), data)

    def _plan(self, changes: Sequence[FileChange]) -> list[_Planned]:
        """Every touched file's new content, in the order first touched; nothing written."""
        state: dict[Path, _Planned] = {}

        def current(given: str) -> _Planned:
            path = self._locate(given)
            if path not in state:
                state[path] = self._load(path, given)
            return state[path]

        for change in changes:
            target = current(change.path)
            if change.kind == "add":
                if target.new is not None:
                    raise PatchError(f"Cannot add {change.path!r}: the file already exists.")
                if change.hunks:
                    new = apply_hunks(Text([]), change.hunks, f"Adding {change.path!r}")
                else:
                    new = Text(change.content)
                target.new = self._encode(new, change.path)
                continue
            if target.new is None:
                raise PatchError(f"File not found: {change.path!r}.")
            if change.kind == "delete":
                if change.hunks:
                    left = apply_hunks(
                        self._decode(target.new, change.path),
                        change.hunks,
                        f"Deleting {change.path!r}",
                    )
                    if left.lines:
                        raise PatchError(
                            f"Cannot delete {change.path!r}: the diff does not remove all"
                            + f" of its lines ({len(left.lines)} would be left)."
                        )
                target.new = None
                continue
            text = self._decode(target.new, change.path)
            updated = apply_hunks(text, change.hunks, f"Updating {change.path!r}")
            data = self._encode(updated, change.path)
            if change.move_to is None:
                target.new = data
                continue
            destination = current(change.move_to)
            if destination.path == target.path:
                target.new = data
                continue
            if destination.new is not None:
                raise PatchError(
                    f"Cannot move {change.path!r} to {change.move_to!r}: that file exists."
                )
            destination.new = data
            if destination.mode is None:
                destination.mode = target.mode
            target.new = None
        return [planned for planned in state.values() if planned.new != planned.original]

    @staticmethod
    def _decode(data: bytes, label: str) -> Text:
        try:
            return Text.parse(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise PatchError(f"{label!r} is not UTF-8 text; it cannot be patched.") from None

    @staticmethod
    def _encode(text: Text, label: str) -> bytes:
        try:
            data = text.render().encode("utf-8")
        except UnicodeEncodeError:
            raise PatchError(f"The new content of {label!r} is not valid Unicode.") from None
        if len(data) > MAX_FILE_BYTES:
            raise PatchError(f"{label!r} would be over the {MAX_FILE_BYTES}-byte limit.")
        return data

    # --- committing --------------------------------------------------------------------

    def _apply(self, patch: str) -> str:
        changes = parse_patch(patch)
        planned = self._plan(changes)
        self._commit(planned)
        return "\n".join(_summary(changes)) or "No changes."

    def _commit(self, planned: Sequence[_Planned]) -> None:
        """Writes every planned file, or (when one fails) puts back those already written."""
        made_dirs: list[Path] = []
        done: list[_Planned] = []
        try:
            for item in planned:
                if item.new is None:
                    self._check_parent(item)
                    os.unlink(item.path)
                else:
                    made_dirs.extend(self._make_parents(item))
                    _replace(item.path, item.new, item.mode)
                done.append(item)
        except Exception as exc:
            for item in reversed(done):
                try:
                    if item.original is None:
                        os.unlink(item.path)
                    else:
                        _replace(item.path, item.original, item.mode)
                except OSError:
                    pass
            for directory in reversed(made_dirs):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if isinstance(exc, PatchError):
                raise
            failed = planned[len(done)].label
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
            raise PatchError(
                f"Cannot write {failed!r}: {reason or type(exc).__name__}. No file was changed."
            ) from None

    def _make_parents(self, item: _Planned) -> list[Path]:
        """Creates the missing folders above a new file; the ones it made, outermost first."""
        missing: list[Path] = []
        parent = item.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        made: list[Path] = []
        for directory in reversed(missing):
            # Checked again here: a folder swapped for a link since planning must not lead out.
            if not any(directory.resolve().is_relative_to(r) for r in self.write_roots):
                raise PatchError(f"Access denied: {item.label!r} leaves the writable folders.")
            directory.mkdir()
            made.append(directory)
        self._check_parent(item)
        return made

    def _check_parent(self, item: _Planned) -> None:
        # Checked again just before writing: a folder swapped for a link since planning
        # must not lead out.
        real_parent = item.path.parent.resolve()
        if not any(real_parent.is_relative_to(root) for root in self.write_roots):
            raise PatchError(f"Access denied: {item.label!r} leaves the writable folders.")


def _replace(path: Path, data: bytes, mode: int | None) -> None:
    """Writes data to a new file beside path, then moves it over path in one step."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _summary(changes: Sequence[FileChange]) -> list[str]:
    lines: list[str] = []
    for change in changes:
        if change.kind == "add":
            lines.append(f"A {change.path}")
        elif change.kind == "delete":
            lines.append(f"D {change.path}")
        elif change.move_to is not None and change.move_to != change.path:
            lines.append(f"R {change.path} -> {change.move_to}")
        else:
            lines.append(f"M {change.path}")
    return lines
