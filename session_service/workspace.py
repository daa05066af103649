"""Per-session working directories, and the host folders tools may reach.

Every session gets `TANDEM_WORKSPACE_ROOT/<tenant>/<session_id>`, made on first use and
removed with the session. File-touching tools resolve relative paths there and cannot leave
it, except into the folders the operator lists in `TANDEM_TOOL_ALLOWED_ROOTS`. A bundle may
narrow that reach, never widen it: the server's own working directory, its databases, its
key files and other sessions' workspaces stay out of reach.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from session_service.tool_policy import ToolPolicy

_log = logging.getLogger(__name__)

# Tenant ids come from the operator's key list; one that is not a plain folder name is hashed.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _folder_name(tenant_id: str) -> str:
    if _PLAIN.fullmatch(tenant_id) and ".." not in tenant_id:
        return tenant_id
    return "t-" + hashlib.sha256(tenant_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Sandbox:
    """Where one session's tools may go: its workspace plus the operator's extra roots, and
    what else the operator lets tools do."""

    workspace: Path
    extra_roots: tuple[Path, ...] = ()
    policy: ToolPolicy = field(default_factory=ToolPolicy)
    # A folder of the session's own that no tool path can reach (it is outside the
    # workspace): where modules keep session state, such as the todo list. None when
    # checking settings before any session exists.
    state: Path | None = None

    @property
    def roots(self) -> tuple[Path, ...]:
        """Every folder a tool may be configured to reach."""
        return (self.workspace, *self.extra_roots)

    def confine(self, entry: str) -> Path:
        """A bundle's path setting as a folder inside the sandbox; ValueError if it is not.

        Relative entries are taken from the workspace (`.` is the workspace itself).
        """
        return confine(entry, self.workspace, self.extra_roots)


def configured_folders(
    config: Mapping[str, Any], key: str, sandbox: Sandbox
) -> tuple[Path, ...] | None:
    """The folders a tool's config lists under key, each confined to the sandbox; None when
    the key is unset. ValueError, naming the entry, for one that is not a path or that
    leaves the sandbox."""
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of directory paths")
    roots: list[Path] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"{key}[{index}] must be a non-empty path string")
        try:
            roots.append(sandbox.confine(entry))
        except ValueError as exc:
            raise ValueError(f"{key}[{index}] {exc}") from None
    return tuple(roots)


def confine(entry: str, workspace: Path, extra_roots: Sequence[Path]) -> Path:
    """entry resolved against workspace; ValueError unless it stays under a permitted root."""
    if "\x00" in entry:
        raise ValueError("must not contain NUL characters")
    given = Path(entry)
    candidate = given if given.is_absolute() else workspace / given
    resolved = Path(os.path.normpath(candidate))
    if not given.is_absolute() and not resolved.is_relative_to(workspace):
        raise ValueError("leaves the session's workspace")
    # Symlinks are followed before the check, so a link cannot carry the path outside.
    real = resolved.resolve(strict=False)
    for root in (workspace, *extra_roots):
        if real.is_relative_to(root.resolve(strict=False)):
            return real
    if given.is_absolute():
        raise ValueError(
            "is outside the session's workspace and the folders the operator allows "
            "(TANDEM_TOOL_ALLOWED_ROOTS)"
        )
    raise ValueError("leaves the session's workspace")


def parse_roots(text: str) -> tuple[Path, ...]:
    """The operator's comma-separated extra roots, resolved; relative ones are refused."""
    roots: list[Path] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        path = Path(part)
        if not path.is_absolute():
            raise ValueError(f"TANDEM_TOOL_ALLOWED_ROOTS: {part!r} must be an absolute path")
        roots.append(path.resolve(strict=False))
    return tuple(roots)


def default_root(database_url: str) -> Path:
    """`workspaces` beside a SQLite database file, else a folder under the temp directory."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix):
        location = database_url[len(prefix) :].split("?", 1)[0]
        if location and location != ":memory:":
            return Path(location).resolve().parent / "workspaces"
    return Path(tempfile.gettempdir()) / "tandem-workspaces"


class Workspaces:
    """Makes, finds and removes session workspaces under one root."""

    def __init__(
        self, root: Path, extra_roots: tuple[Path, ...] = (), policy: ToolPolicy | None = None
    ) -> None:
        self.root = root.resolve(strict=False)
        self.extra_roots = extra_roots
        self.policy = policy or ToolPolicy()

    def path(self, tenant_id: str, session_id: str) -> Path:
        """Where the session's workspace is (it may not exist yet)."""
        return self.root / _folder_name(tenant_id) / session_id

    def state_path(self, tenant_id: str, session_id: str) -> Path:
        """Where the session's module state is kept (session ids never start with a dot)."""
        return self.root / _folder_name(tenant_id) / ".state" / session_id

    def sandbox(self, tenant_id: str, session_id: str, workspace_of: str = "") -> Sandbox:
        """The session's sandbox, its workspace and state folder made (owner-only) if new.

        workspace_of names another session whose workspace this one works in (an agent's
        child session works in the files of the session that started the chain); the state
        folder is always the session's own.
        """
        workspace = self.path(tenant_id, workspace_of or session_id)
        workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
        state = self.state_path(tenant_id, session_id)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Sandbox(workspace.resolve(), self.extra_roots, self.policy, state.resolve())

    def rules(self) -> Sandbox:
        """A sandbox for checking bundle settings before any session exists."""
        return Sandbox(self.root / "_check", self.extra_roots, self.policy)

    def remove(self, tenant_id: str, session_id: str) -> None:
        """Deletes the session's workspace and everything in it; a missing one is fine."""
        for path in (self.path(tenant_id, session_id), self.state_path(tenant_id, session_id)):
            try:
                shutil.rmtree(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                # The session is gone either way; what is left over is for the operator.
                _log.warning("could not remove a workspace: %s", type(exc).__name__)

    def stage_copy(
        self,
        tenant_id: str,
        workspace_of: str,
        session_id: str,
        limits: CopyLimits | None = None,
    ) -> Path:
        """A copy of a session's files in a private staging folder, for `place` to move in.

        workspace_of is the session whose workspace session_id works in (itself, or for an
        agent's child session the session that started the chain); the state folder is
        session_id's own. WorkspaceTooLarge past the limits, and then nothing is left.
        """
        staged = self.root / _folder_name(tenant_id) / ".forks" / uuid.uuid4().hex
        staged.mkdir(mode=0o700, parents=True)
        try:
            budget = _Budget(limits or CopyLimits())
            copy_tree(self.path(tenant_id, workspace_of), staged / "workspace", budget)
            copy_tree(self.state_path(tenant_id, session_id), staged / "state", budget)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged

    def place(self, staged: Path, tenant_id: str, session_id: str) -> None:
        """Moves a staged copy in as session_id's workspace and state folder.

        The caller has claimed session_id (its row is written, not yet committed), so what
        is there already belongs to no session: a leftover that a delete could not remove.
        """
        for part, target in (
            ("workspace", self.path(tenant_id, session_id)),
            ("state", self.state_path(tenant_id, session_id)),
        ):
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                _remove_any(target)
            os.rename(staged / part, target)
        staged.rmdir()

    def discard(self, staged: Path) -> None:
        """Removes a staged copy that will not be placed."""
        shutil.rmtree(staged, ignore_errors=True)


MIB = 1024 * 1024


@dataclass(frozen=True)
class CopyLimits:
    """How much of a workspace (with its state folder) a fork copies at most."""

    max_bytes: int = 512 * MIB
    # Files and folders, each one entry.
    max_entries: int = 50_000
    max_depth: int = 64


class WorkspaceTooLarge(Exception):
    """A workspace over a copy limit; what names the limit ("bytes", "entries", "depth")."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"the workspace holds more than {limit} {what}")
        self.what = what
        self.limit = limit


class _Budget:
    def __init__(self, limits: CopyLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self.entries = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise WorkspaceTooLarge("files and folders", self.limits.max_entries)

    def take(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise WorkspaceTooLarge("bytes", self.limits.max_bytes)


# Opening with these never follows a link in the last component, and a FIFO swapped in
# after the listing cannot block the open.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def copy_tree(source: Path, target: Path, budget: _Budget) -> None:
    """Copies the folders and regular files under source into target (made here).

    The source is hostile (a turn's tools wrote it, and one may still be writing): every
    folder and file is opened relative to its parent's descriptor without following links,
    so nothing swapped in during the copy leads outside. Symbolic links are skipped, not
    copied: a link copied as it is could point into the parent's workspace or elsewhere on
    the host, and a link followed would copy what it points at. Sockets, FIFOs and devices
    are skipped too, as is anything that cannot be read. A missing source is an empty copy.
    """
    target.mkdir(mode=0o700)
    try:
        descriptor = os.open(source, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return  # the folder itself is a link
        raise
    try:
        _copy_folder(descriptor, target, budget, 1)
    finally:
        os.close(descriptor)


def _copy_folder(descriptor: int, target: Path, budget: _Budget, depth: int) -> None:
    if depth > budget.limits.max_depth:
        raise WorkspaceTooLarge("levels of folders", budget.limits.max_depth)
    with os.scandir(descriptor) as listing:
        entries = [(entry.name, entry.is_symlink()) for entry in listing]
    for name, is_link in entries:
        if is_link:
            continue
        budget.entry()
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=descriptor)
        except OSError:
            child = -1  # not a folder (or gone): perhaps a file
        if child >= 0:
            try:
                (target / name).mkdir(mode=0o700)
                _copy_folder(child, target / name, budget, depth + 1)
            finally:
                os.close(child)
            continue
        _copy_file(descriptor, name, target / name, budget)


def _copy_file(folder: int, name: str, target: Path, budget: _Budget) -> None:
    try:
        source = os.open(name, _FILE_FLAGS, dir_fd=folder)
    except OSError:
        return  # a link, gone, or unreadable
    try:
        status = os.fstat(source)
        if not stat.S_ISREG(status.st_mode):
            return
        budget.take(status.st_size)
        os.set_blocking(source, True)
        copied = 0
        with open(target, "xb") as out:
            while chunk := os.read(source, MIB):
                grown = max(copied + len(chunk), status.st_size) - max(copied, status.st_size)
                budget.take(grown)  # what it grew by while being copied counts too
                copied += len(chunk)
                out.write(chunk)
        os.chmod(target, stat.S_IMODE(status.st_mode) & 0o777)
        os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))
    finally:
        os.close(source)


def _remove_any(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)
