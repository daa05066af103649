"""Reads, lists and writes files inside the session's sandbox.

The sandbox is the session's workspace plus the folders the operator allows. Config keys
(Amplifier's names; see CONFIG_KEYS), each a list of folders, relative ones taken from the
workspace:

- `allowed_read_paths`: where read_file and list_directory may go (default: the workspace).
  `allowed_paths` is an alias kept for older bundles; given both, they must name the same
  folders. Unlike Amplifier's module, leaving it out (or null) never means "read anything":
  it means the workspace.
- `allowed_write_paths`: where write_file may go (default: the workspace).
- `max_read_bytes`: the largest file read_file returns (default 256 KiB).

Every path setting can only narrow the sandbox: one that points elsewhere is refused, when the
bundle is prepared and again when the tool is made. Every path is resolved (symlinks
included) before it is checked against the roots, and files are opened with O_NOFOLLOW on the
resolved path, so neither `..` nor a symlink can reach outside them. Error messages only name
the path the model passed.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from session_service.turns.protocols import ToolResult, ToolSpec
from session_service.workspace import Sandbox, configured_folders

DEFAULT_MAX_READ_BYTES = 262144
# Amplifier's name first, then the alias older Tandem bundles use.
READ_KEYS = ("allowed_read_paths", "allowed_paths")

# Not every platform has these; without them the resolve-then-check still holds.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class _Refused(Exception):
    """A call that ends in an error result; the message is safe to show the model."""


def _roots(config: Mapping[str, Any], key: str, sandbox: Sandbox) -> tuple[Path, ...]:
    roots = configured_folders(config, key, sandbox)
    return (sandbox.workspace,) if roots is None else roots


def _read_roots(config: Mapping[str, Any], sandbox: Sandbox) -> tuple[Path, ...]:
    """The readable folders: allowed_read_paths, or its alias allowed_paths, confined."""
    given = {key: _roots(config, key, sandbox) for key in READ_KEYS if config.get(key) is not None}
    if not given:
        return (sandbox.workspace,)
    first, *others = given.values()
    # Compared once confined: ["docs", "./docs/"] and ["docs"] name the same folder.
    if any(set(other) != set(first) for other in others):
        raise ValueError(
            f"{READ_KEYS[0]} and its alias {READ_KEYS[1]} name different folders;"
            f" set only {READ_KEYS[0]}"
        )
    return first


class FilesystemTool:
    """Reads, lists and writes files inside the session's sandbox."""

    CONFIG_KEYS: frozenset[str] = frozenset(
        {"allowed_read_paths", "allowed_paths", "allowed_write_paths", "max_read_bytes"}
    )

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        self._workspace = sandbox.workspace
        self.read_roots = _read_roots(config, sandbox)
        self.write_roots = _roots(config, "allowed_write_paths", sandbox)
        max_read_bytes = config.get("max_read_bytes", DEFAULT_MAX_READ_BYTES)
        if (
            not isinstance(max_read_bytes, int)
            or isinstance(max_read_bytes, bool)
            or max_read_bytes < 1
        ):
            raise ValueError("max_read_bytes must be a positive integer")
        self.max_read_bytes = max_read_bytes

    @staticmethod
    def check_config(config: Mapping[str, Any], sandbox: Sandbox) -> list[tuple[str, str]]:
        """Problems with a bundle's settings for this tool, as (config key, message) pairs."""
        problems: list[tuple[str, str]] = []
        for key in (*READ_KEYS, "allowed_write_paths"):
            try:
                _roots(config, key, sandbox)
            except ValueError as exc:
                problems.append((key, str(exc)))
        if not problems:
            try:
                _read_roots(config, sandbox)
            except ValueError as exc:
                problems.append((READ_KEYS[0], str(exc)))
        return problems

    def _shown(self, roots: Sequence[Path]) -> str:
        # The model sees workspace paths relative to it: the host layout is none of its business.
        shown = []
        for root in roots:
            if root.is_relative_to(self._workspace):
                relative = root.relative_to(self._workspace).as_posix()
                shown.append("." if relative == "." else f"./{relative}")
            else:
                shown.append(str(root))
        return ", ".join(shown) or "none"

    def specs(self) -> Sequence[ToolSpec]:
        """The read_file, list_directory and write_file tools."""
        readable = self._shown(self.read_roots)
        writable = self._shown(self.write_roots)
        path_schema = {"type": "string"}
        return (
            ToolSpec(
                "read_file",
                "Read a UTF-8 text file and return its contents. Relative paths are resolved"
                + f" against the workspace ('.'). Readable directories: {readable}."
                + f" Files larger than {self.max_read_bytes} bytes cannot be read.",
                {
                    "type": "object",
                    "properties": {"path": {**path_schema, "description": "The file to read."}},
                    "required": ["path"],
                    "additionalProperties": False,
                },
            ),
            ToolSpec(
                "list_directory",
                "List the entries of a directory, one per line, sorted by name; directories"
                + " end with '/'. Relative paths are resolved against the workspace ('.')."
                + f" Readable directories: {readable}.",
                {
                    "type": "object",
                    "properties": {
                        "path": {**path_schema, "description": "The directory to list."}
                    },
                    "required": ["path"],
                    "additionalProperties": False,
                },
            ),
            ToolSpec(
                "write_file",
                "Create or overwrite a UTF-8 text file with the given content. The parent"
                + " directory must already exist; directories are not created. Relative paths"
                + " are resolved against the workspace ('.')."
                + f" Writable directories: {writable}.",
                {
                    "type": "object",
                    "properties": {
                        "path": {**path_schema, "description": "The file to write."},
                        "content": {"type": "string", "description": "The full new contents."},
                    },
                    "required": ["path", "content"],
                    "additionalProperties": False,
                },
            ),
        )

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs one tool; every failure is returned as an error result, never raised."""
        try:
            if name == "read_file":
                path = _string_argument(arguments, "path")
                return ToolResult(await asyncio.to_thread(self._read, path))
            if name == "list_directory":
                path = _string_argument(arguments, "path")
                return ToolResult(await asyncio.to_thread(self._list, path))
            if name == "write_file":
                path = _string_argument(arguments, "path")
                content = _string_argument(arguments, "content")
                return ToolResult(await asyncio.to_thread(self._write, path, content))
            return ToolResult(
                f"Unknown tool {name!r}; this module offers read_file, list_directory"
                + " and write_file.",
                is_error=True,
            )
        except _Refused as exc:
            return ToolResult(str(exc), is_error=True)
        except Exception as exc:
            # The type alone: an unexpected error's text could name paths outside the roots.
            return ToolResult(f"{name} failed: {type(exc).__name__}.", is_error=True)

    def _locate(self, given: str, roots: Sequence[Path], kind: str) -> Path:
        """Resolves a path argument and checks it lies under one of roots."""
        if not roots:
            raise _Refused(f"No directories are configured for {kind}.")
        if "\x00" in given:
            raise _Refused("The path must not contain NUL characters.")
        candidate = Path(given)
        if not candidate.is_absolute():
            candidate = self._workspace / candidate
        try:
            resolved = candidate.resolve(strict=False)
        except (OSError, RuntimeError):
            raise _Refused(f"Cannot resolve {given!r}.") from None
        if not any(resolved.is_relative_to(root) for root in roots):
            raise _Refused(
                f"Access denied: {given!r} is outside the directories allowed for {kind}."
            )
        return resolved

    def _read(self, given: str) -> str:
        path = self._locate(given, self.read_roots, "reading")
        try:
            # O_NONBLOCK so a FIFO in the tree cannot hang the worker thread.
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        except FileNotFoundError:
            raise _Refused(f"File not found: {given!r}.") from None
        except OSError as exc:
            raise _Refused(
                f"Cannot read {given!r}: {exc.strerror or type(exc).__name__}."
            ) from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise _Refused(f"{given!r} is a directory; use list_directory.")
            if not stat.S_ISREG(info.st_mode):
                raise _Refused(f"{given!r} is not a regular file.")
            if info.st_size > self.max_read_bytes:
                raise _Refused(
                    f"{given!r} is {info.st_size} bytes, over the {self.max_read_bytes}-byte"
                    + " read limit."
                )
            # One byte more than allowed tells a file that grew since fstat from one that fits.
            data = _read_up_to(fd, self.max_read_bytes + 1)
        except OSError as exc:
            raise _Refused(
                f"Cannot read {given!r}: {exc.strerror or type(exc).__name__}."
            ) from None
        finally:
            os.close(fd)
        if len(data) > self.max_read_bytes:
            raise _Refused(f"{given!r} is over the {self.max_read_bytes}-byte read limit.")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(f"{given!r} is not UTF-8 text.") from None

    def _list(self, given: str) -> str:
        path = self._locate(given, self.read_roots, "reading")
        try:
            if not path.exists():
                raise _Refused(f"Directory not found: {given!r}.")
            if not path.is_dir():
                raise _Refused(f"{given!r} is not a directory; use read_file.")
            entries: list[str] = []
            with os.scandir(path) as listing:
                for entry in listing:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    entries.append(entry.name + "/" if is_dir else entry.name)
        except OSError as exc:
            raise _Refused(
                f"Cannot list {given!r}: {exc.strerror or type(exc).__name__}."
            ) from None
        return "\n".join(sorted(entries))

    def _write(self, given: str, content: str) -> str:
        path = self._locate(given, self.write_roots, "writing")
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused("The content is not valid Unicode text.") from None
        try:
            if not path.parent.is_dir():
                raise _Refused(
                    f"The parent directory of {given!r} does not exist; directories are not"
                    + " created."
                )
            if path.is_dir():
                raise _Refused(f"{given!r} is a directory, not a file.")
            if path.exists() and not path.is_file():
                raise _Refused(f"{given!r} is not a regular file.")
            # The path is already resolved: O_NOFOLLOW refuses a symlink swapped in since.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | _NONBLOCK, 0o666)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            finally:
                os.close(fd)
        except OSError as exc:
            raise _Refused(
                f"Cannot write {given!r}: {exc.strerror or type(exc).__name__}."
            ) from None
        return f"Wrote {len(data)} bytes to {given}."


def _string_argument(arguments: Mapping[str, Any], key: str) -> str:
    value = arguments.get(key) if isinstance(arguments, Mapping) else None
    if value is None:
        raise _Refused(f"Missing required argument {key!r}.")
    if not isinstance(value, str):
        raise _Refused(f"Argument {key!r} must be a string, not {type(value).__name__}.")
    return value


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
