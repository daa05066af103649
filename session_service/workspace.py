"""Per-session working directories, and the host folders tools may reach.

Every session gets `TANDEM_WORKSPACE_ROOT/<tenant>/<session_id>`, made on first use and
removed with the session. File-touching tools resolve relative paths there and cannot leave
it, except into the folders the operator lists in `TANDEM_TOOL_ALLOWED_ROOTS`. A bundle may
narrow that reach, never widen it: the server's own working directory, its databases, its
key files and other sessions' workspaces stay out of reach.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
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
