"""What `tandem import` reads of a package folder and of a git repository, on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tandem_cli.packages import PackageError, cloned, parse_git_address, read_folder


def make_package(root: Path) -> None:
    (root / "agents").mkdir(parents=True)
    (root / "context").mkdir()
    (root / "src").mkdir()
    (root / ".github").mkdir()
    (root / "bundle.md").write_text("---\nbundle:\n  name: kit\n---\nHello.\n")
    (root / "README.md").write_text("# Kit\n")
    (root / "agents" / "helper.md").write_text("---\nmeta:\n  name: helper\n---\nHelp.\n")
    (root / "context" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    (root / "context" / "style.md").write_text("Be brief.\n")
    (root / "src" / "module.py").write_text("print('code')\n")
    (root / ".github" / "ci.yml").write_text("on: push\n")


def test_a_folder_gives_its_package_files_and_says_what_it_left_out(tmp_path: Path) -> None:
    make_package(tmp_path)
    package = read_folder(tmp_path)
    assert sorted(package.files) == [
        "README.md",
        "agents/helper.md",
        "bundle.md",
        "context/style.md",
    ]
    assert package.files["context/style.md"] == b"Be brief.\n"
    assert sorted(package.skipped) == [
        ("context/logo.png", "not UTF-8 text"),
        ("src/module.py", "not part of a bundle package"),
    ]
    assert package.size == sum(len(c) for c in package.files.values())


def test_a_folder_without_a_root_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("no bundle\n")
    with pytest.raises(PackageError, match=r"no bundle\.md"):
        read_folder(tmp_path)


def git(*arguments: str, cwd: Path) -> None:
    subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True)


def test_a_git_repository_is_cloned_at_its_ref_and_subdirectory(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    (repository / "kits" / "first").mkdir(parents=True)
    make_package(repository / "kits" / "first")
    git("init", "--quiet", "--initial-branch", "main", cwd=repository)
    git("add", ".", cwd=repository)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1", cwd=repository)
    git("tag", "v1", cwd=repository)
    (repository / "kits" / "first" / "context" / "style.md").write_text("Be very brief.\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "v2", cwd=repository)

    address = f"git+file://{repository}@v1#subdirectory=kits/first"
    with cloned(address) as package:
        assert package.files["context/style.md"] == b"Be brief.\n"
        assert package.source_uri == f"git+file://{repository}@v1"
        assert "bundle.md" in package.files
    with cloned(f"git+file://{repository}@main#subdirectory=kits/first") as latest:
        assert latest.files["context/style.md"] == b"Be very brief.\n"
    with (
        pytest.raises(PackageError, match="git checkout failed"),
        cloned(f"git+file://{repository}@no-such-ref#subdirectory=kits/first"),
    ):
        pass


def test_addresses_are_taken_apart_and_bad_ones_refused() -> None:
    parsed = parse_git_address("git+https://example.com/acme/kit.git@v2#subdirectory=pkg/")
    assert (parsed.repository, parsed.ref, parsed.subdirectory) == (
        "https://example.com/acme/kit.git",
        "v2",
        "pkg",
    )
    assert parsed.source_uri == "git+https://example.com/acme/kit.git@v2"
    with pytest.raises(PackageError):
        parse_git_address("https://example.com/acme/kit")
    with pytest.raises(PackageError, match="inside the repository"):
        parse_git_address("git+https://example.com/acme/kit#subdirectory=../etc")
