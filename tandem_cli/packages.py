"""Reading a bundle package for `tandem import`: from a folder, or from git on this machine.

A package is the Amplifier layout: the root `bundle.md` (or `bundle.yaml`), and the folders
bundles refer to (`behaviors/`, `agents/`, `context/`, `providers/`, `skills/`, `bundles/`,
`recipes/`), plus markdown and YAML files at the root. Everything else in a repository
(code, tests, dot-files such as `.git`) is not part of it and is left out, as are files
that are not UTF-8 text; what was left out is reported, never sent.

A `git+https://HOST/ORG/REPO@REF#subdirectory=DIR` (or `git+file://…`) address is cloned by
the `git` command into a temporary folder on the client: the server never fetches anything.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PACKAGE_FOLDERS = ("behaviors", "agents", "context", "providers", "skills", "bundles", "recipes")
ROOT_SUFFIXES = (".md", ".yaml", ".yml")
ROOT_BUNDLES = ("bundle.md", "bundle.yaml")
# A package is text: a file larger than this is surely not part of one.
MAX_FILE_BYTES = 4 * 1024 * 1024


class PackageError(Exception):
    """A package that cannot be read; the message is for the user."""


@dataclass
class Package:
    """The files to import (path -> bytes), where they came from, and what was left out."""

    files: dict[str, bytes] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    source_uri: str = ""

    @property
    def size(self) -> int:
        """Bytes to send."""
        return sum(len(content) for content in self.files.values())


def _belongs(relative: Path) -> bool:
    parts = relative.parts
    if any(part.startswith(".") for part in parts):
        return False
    if len(parts) == 1:
        return relative.suffix in ROOT_SUFFIXES
    return parts[0] in PACKAGE_FOLDERS


def measure(root: Path) -> tuple[int, int]:
    """How many files and bytes a folder holds (dot-folders aside): sizes a progress bar."""
    count = size = 0
    for directory, folders, names in os.walk(root):
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in names:
            with contextlib.suppress(OSError):
                size += (Path(directory) / name).lstat().st_size
                count += 1
    return count, size


def read_folder(root: Path, on_file: Callable[[int], None] | None = None) -> Package:
    """The package under root; PackageError when root has no root bundle.

    on_file is called with each file's size as it is looked at, for a progress bar.
    """
    root = root.resolve()
    if not root.is_dir():
        raise PackageError(f"{root} is not a folder")
    if not any((root / name).is_file() for name in ROOT_BUNDLES):
        raise PackageError(f"{root} has no bundle.md or bundle.yaml: it is not a bundle package")
    package = Package()
    for directory, folders, names in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(names):
            path = Path(directory) / name
            relative = path.relative_to(root)
            shown = relative.as_posix()
            if on_file is not None:
                with contextlib.suppress(OSError):
                    on_file(path.lstat().st_size)
            if not _belongs(relative):
                if not any(part.startswith(".") for part in relative.parts):
                    package.skipped.append((shown, "not part of a bundle package"))
                continue
            if path.is_symlink() or not path.is_file():
                package.skipped.append((shown, "not a regular file"))
                continue
            if path.stat().st_size > MAX_FILE_BYTES:
                package.skipped.append((shown, "larger than a package file may be"))
                continue
            content = path.read_bytes()
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                package.skipped.append((shown, "not UTF-8 text"))
                continue
            package.files[shown] = content
    return package


@dataclass(frozen=True)
class GitAddress:
    """A `git+SCHEME://…@REF#subdirectory=DIR` address, taken apart."""

    repository: str  # what git clones: https://HOST/ORG/REPO or file:///path
    ref: str
    subdirectory: str
    source_uri: str  # as given, without the fragment: what the package is recorded under


def parse_git_address(address: str) -> GitAddress:
    """The parts of a git address; PackageError when it is not one."""
    if not address.startswith(("git+https://", "git+file://")):
        raise PackageError(f"{address!r} is not a git+https:// or git+file:// address")
    without_fragment, _, fragment = address.partition("#")
    subdirectory = ""
    for part in fragment.split("&") if fragment else ():
        key, _, value = part.partition("=")
        if key == "subdirectory":
            subdirectory = value.strip("/")
    if subdirectory and (".." in subdirectory.split("/") or subdirectory.startswith("/")):
        raise PackageError(f"subdirectory {subdirectory!r} must stay inside the repository")
    url = without_fragment[len("git+") :]
    split = urlsplit(url)
    path, ref = split.path, ""
    # @REF ends the path (an @ in user info comes before the host, not here).
    if "@" in path.rsplit("/", 1)[-1]:
        path, _, ref = path.rpartition("@")
    repository = f"{split.scheme}://{split.netloc}{path}"
    return GitAddress(repository, ref, subdirectory, without_fragment)


def _git(*arguments: str, cwd: Path | None = None) -> None:
    # No terminal prompts: a private repository without credentials fails instead of hanging.
    environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    completed = subprocess.run(
        ["git", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        raise PackageError(f"git {arguments[0]} failed: {detail[-1] if detail else 'no output'}")


@contextlib.contextmanager
def cloned(address: str, on_file: Callable[[int], None] | None = None) -> Iterator[Package]:
    """The package at a git address, cloned into a temporary folder removed on exit."""
    parsed = parse_git_address(address)
    with tempfile.TemporaryDirectory(prefix="tandem-import-") as scratch:
        checkout = Path(scratch) / "repository"
        _git("clone", "--quiet", "--no-checkout", parsed.repository, str(checkout))
        _git("checkout", "--quiet", parsed.ref or "HEAD", cwd=checkout)
        root = checkout / parsed.subdirectory if parsed.subdirectory else checkout
        package = read_folder(root, on_file)
        # Recorded as published: references name the package by this address.
        package.source_uri = parsed.source_uri
        yield package
