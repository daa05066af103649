"""tool-filesystem against real files: what it may touch, and how it refuses the rest."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from session_service.modules.filesystem import FilesystemTool
from session_service.turns.protocols import ToolResult
from session_service.workspace import Sandbox


class Tree:
    """A workspace (`root`), a writable folder inside it, and a directory outside both."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.out = self.root / "out"
        self.outside = base / "outside"
        for directory in (self.root, self.out, self.root / "sub", self.outside):
            directory.mkdir()
        (self.root / "hello.txt").write_text("héllo\nworld\n", encoding="utf-8")
        (self.root / "sub" / "inner.txt").write_text("inner", encoding="utf-8")
        (self.outside / "secret.txt").write_text("top secret", encoding="utf-8")

    def tool(self, **overrides: Any) -> FilesystemTool:
        config: dict[str, Any] = {
            "allowed_paths": [str(self.root)],
            "allowed_write_paths": [str(self.out)],
        }
        config.update(overrides)
        return FilesystemTool(config, self.sandbox)

    @property
    def sandbox(self) -> Sandbox:
        return Sandbox(self.root.resolve())


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


async def _call(tool: FilesystemTool, name: str, arguments: Mapping[str, Any]) -> ToolResult:
    return await tool.call(name, arguments)


def _refused(result: ToolResult, *fragments: str) -> None:
    assert result.is_error, result.content
    for fragment in fragments:
        assert fragment in result.content


def test_specs_describe_three_tools(tree: Tree) -> None:
    specs = {spec.name: spec for spec in tree.tool().specs()}
    assert set(specs) == {"read_file", "list_directory", "write_file"}
    assert specs["read_file"].parameters["required"] == ["path"]
    assert specs["list_directory"].parameters["properties"]["path"]["type"] == "string"
    assert specs["write_file"].parameters["required"] == ["path", "content"]
    assert all(spec.description for spec in specs.values())


async def test_read_relative_and_absolute(tree: Tree) -> None:
    tool = tree.tool()
    assert await _call(tool, "read_file", {"path": "hello.txt"}) == ToolResult("héllo\nworld\n")
    absolute = str(tree.root / "sub" / "inner.txt")
    assert await _call(tool, "read_file", {"path": absolute}) == ToolResult("inner")
    # `..` that stays inside the root is fine.
    assert (await _call(tool, "read_file", {"path": "sub/../hello.txt"})).content.startswith("h")


async def test_list_directory_sorted_with_directory_slashes(tree: Tree) -> None:
    tool = tree.tool()
    (tree.root / "a.md").write_text("", encoding="utf-8")
    result = await _call(tool, "list_directory", {"path": "."})
    assert result == ToolResult("a.md\nhello.txt\nout/\nsub/")
    assert await _call(tool, "list_directory", {"path": "sub"}) == ToolResult("inner.txt")


async def test_write_creates_and_overwrites(tree: Tree) -> None:
    tool = tree.tool()
    result = await _call(tool, "write_file", {"path": "out/note.txt", "content": "é1"})
    assert not result.is_error
    assert "3 bytes" in result.content
    assert (tree.out / "note.txt").read_text(encoding="utf-8") == "é1"
    result = await _call(tool, "write_file", {"path": str(tree.out / "note.txt"), "content": "x"})
    assert not result.is_error
    assert (tree.out / "note.txt").read_text(encoding="utf-8") == "x"
    # What was written can be read back through the readable root.
    assert await _call(tool, "read_file", {"path": "out/note.txt"}) == ToolResult("x")


async def test_dot_dot_escape_is_refused(tree: Tree) -> None:
    tool = tree.tool()
    result = await _call(tool, "read_file", {"path": "../outside/secret.txt"})
    _refused(result, "../outside/secret.txt")
    assert "top secret" not in result.content
    _refused(await _call(tool, "list_directory", {"path": ".."}))
    _refused(await _call(tool, "write_file", {"path": "../../outside/x.txt", "content": "x"}))
    assert not (tree.outside / "x.txt").exists()


async def test_absolute_path_outside_is_refused(tree: Tree) -> None:
    tool = tree.tool()
    secret = str(tree.outside / "secret.txt")
    result = await _call(tool, "read_file", {"path": secret})
    _refused(result, "outside")
    assert "top secret" not in result.content
    _refused(await _call(tool, "list_directory", {"path": str(tree.outside)}))
    _refused(await _call(tool, "write_file", {"path": str(tree.outside / "x"), "content": "x"}))
    assert sorted(os.listdir(tree.outside)) == ["secret.txt"]


async def test_symlink_escape_is_refused_for_read_and_list(tree: Tree) -> None:
    tool = tree.tool()
    (tree.root / "link.txt").symlink_to(tree.outside / "secret.txt")
    (tree.root / "linkdir").symlink_to(tree.outside, target_is_directory=True)
    result = await _call(tool, "read_file", {"path": "link.txt"})
    _refused(result, "link.txt")
    assert "top secret" not in result.content
    assert str(tree.outside) not in result.content
    _refused(await _call(tool, "read_file", {"path": "linkdir/secret.txt"}))
    _refused(await _call(tool, "list_directory", {"path": "linkdir"}))


async def test_symlink_escape_is_refused_for_write(tree: Tree) -> None:
    tool = tree.tool()
    (tree.out / "file-link").symlink_to(tree.outside / "secret.txt")
    (tree.out / "dir-link").symlink_to(tree.outside, target_is_directory=True)
    (tree.out / "dangling").symlink_to(tree.outside / "new.txt")
    result = await _call(tool, "write_file", {"path": "out/file-link", "content": "pwned"})
    _refused(result, "out/file-link")
    assert str(tree.outside) not in result.content
    _refused(await _call(tool, "write_file", {"path": "out/dir-link/new.txt", "content": "pwned"}))
    _refused(await _call(tool, "write_file", {"path": "out/dangling", "content": "pwned"}))
    assert (tree.outside / "secret.txt").read_text(encoding="utf-8") == "top secret"
    assert sorted(os.listdir(tree.outside)) == ["secret.txt"]


async def test_write_inside_readable_but_outside_writable_is_refused(tree: Tree) -> None:
    tool = tree.tool()
    result = await _call(tool, "write_file", {"path": str(tree.root / "x.txt"), "content": "x"})
    _refused(result, "writing")
    result = await _call(tool, "write_file", {"path": "../hello.txt", "content": "x"})
    _refused(result)
    assert not (tree.root / "x.txt").exists()
    assert (tree.root / "hello.txt").read_text(encoding="utf-8") == "héllo\nworld\n"


async def test_the_workspace_is_the_default_reach(tree: Tree) -> None:
    tool = FilesystemTool({}, tree.sandbox)
    assert await _call(tool, "read_file", {"path": "hello.txt"}) == ToolResult("héllo\nworld\n")
    assert not (await _call(tool, "write_file", {"path": "x.txt", "content": "x"})).is_error
    assert (tree.root / "x.txt").read_text(encoding="utf-8") == "x"
    _refused(await _call(tool, "read_file", {"path": str(tree.outside / "secret.txt")}))
    # Readable roots do not make a directory writable.
    tool = FilesystemTool({"allowed_paths": ["."], "allowed_write_paths": []}, tree.sandbox)
    _refused(await _call(tool, "write_file", {"path": "y.txt", "content": ""}))
    assert not (tree.root / "y.txt").exists()


@pytest.mark.parametrize(
    "entry", ["/", "/etc", "..", "../outside", "out/../../outside", "/proc/self"]
)
def test_a_bundle_cannot_widen_the_reach(tree: Tree, entry: str) -> None:
    for key in ("allowed_read_paths", "allowed_paths", "allowed_write_paths"):
        problems = FilesystemTool.check_config({key: [entry]}, tree.sandbox)
        assert [k for k, _ in problems] == [key]
        with pytest.raises(ValueError, match=key):
            FilesystemTool({key: [entry]}, tree.sandbox)


@pytest.mark.parametrize("key", ["allowed_read_paths", "allowed_paths", "allowed_write_paths"])
def test_a_symlinked_root_that_leaves_the_workspace_is_refused(tree: Tree, key: str) -> None:
    (tree.root / "escape").symlink_to(tree.outside, target_is_directory=True)
    with pytest.raises(ValueError, match=key):
        FilesystemTool({key: ["escape"]}, tree.sandbox)
    assert [k for k, _ in FilesystemTool.check_config({key: ["escape"]}, tree.sandbox)] == [key]


@pytest.mark.parametrize("key", ["allowed_read_paths", "allowed_paths"])
async def test_readable_folders_under_either_name_narrow_reads_alike(tree: Tree, key: str) -> None:
    # allowed_read_paths is Amplifier's name; allowed_paths stays as its alias.
    tool = FilesystemTool({key: ["sub"]}, tree.sandbox)
    assert tool.read_roots == ((tree.root / "sub").resolve(),)
    assert await _call(tool, "read_file", {"path": "sub/inner.txt"}) == ToolResult("inner")
    _refused(await _call(tool, "read_file", {"path": "hello.txt"}), "reading")
    _refused(await _call(tool, "list_directory", {"path": "."}), "reading")
    # Writes keep their own default, the workspace.
    assert tool.write_roots == (tree.root.resolve(),)


def test_both_read_names_may_be_given_when_they_name_the_same_folders(tree: Tree) -> None:
    config = {
        "allowed_read_paths": ["sub", "out"],
        "allowed_paths": ["./out/", str(tree.root / "sub")],
    }
    assert FilesystemTool.check_config(config, tree.sandbox) == []
    tool = FilesystemTool(config, tree.sandbox)
    assert tool.read_roots == ((tree.root / "sub").resolve(), tree.out.resolve())


def test_read_names_that_disagree_are_refused_naming_both(tree: Tree) -> None:
    config = {"allowed_read_paths": ["sub"], "allowed_paths": ["."]}
    with pytest.raises(ValueError, match="allowed_read_paths") as raised:
        FilesystemTool(config, tree.sandbox)
    assert "allowed_paths" in str(raised.value)
    [(key, message)] = FilesystemTool.check_config(config, tree.sandbox)
    assert key == "allowed_read_paths"
    assert "allowed_paths" in message


def test_a_widening_alias_is_reported_as_itself_not_as_a_disagreement(tree: Tree) -> None:
    config = {"allowed_read_paths": ["sub"], "allowed_paths": [str(tree.outside)]}
    problems = FilesystemTool.check_config(config, tree.sandbox)
    assert [key for key, _ in problems] == ["allowed_paths"]
    assert "outside" in problems[0][1]


async def test_operator_roots_are_reachable_when_named(tree: Tree) -> None:
    sandbox = Sandbox(tree.root.resolve(), (tree.outside.resolve(),))
    tool = FilesystemTool({"allowed_paths": [".", str(tree.outside)]}, sandbox)
    result = await _call(tool, "read_file", {"path": str(tree.outside / "secret.txt")})
    assert result == ToolResult("top secret")
    # An operator root still has to be named: the default reach is the workspace alone.
    default = FilesystemTool({}, sandbox)
    _refused(await _call(default, "read_file", {"path": str(tree.outside / "secret.txt")}))


async def test_write_does_not_create_directories(tree: Tree) -> None:
    result = await _call(tree.tool(), "write_file", {"path": "out/new/dir/x.txt", "content": "x"})
    _refused(result, "does not exist")
    assert not (tree.out / "new").exists()


async def test_missing_file_and_wrong_kinds(tree: Tree) -> None:
    tool = tree.tool()
    _refused(await _call(tool, "read_file", {"path": "nope.txt"}), "not found", "nope.txt")
    _refused(await _call(tool, "list_directory", {"path": "nope"}), "not found")
    _refused(await _call(tool, "read_file", {"path": "sub"}), "directory")
    _refused(await _call(tool, "list_directory", {"path": "hello.txt"}), "not a directory")
    _refused(await _call(tool, "write_file", {"path": "out", "content": "x"}), "a directory")


async def test_too_large_file_is_refused(tree: Tree) -> None:
    (tree.root / "big.txt").write_bytes(b"x" * 101)
    (tree.root / "fits.txt").write_bytes(b"y" * 100)
    tool = tree.tool(max_read_bytes=100)
    _refused(await _call(tool, "read_file", {"path": "big.txt"}), "101 bytes", "100-byte")
    assert await _call(tool, "read_file", {"path": "fits.txt"}) == ToolResult("y" * 100)


async def test_non_utf8_file_is_refused(tree: Tree) -> None:
    (tree.root / "bin.dat").write_bytes(b"\xff\xfe\x00binary")
    _refused(await _call(tree.tool(), "read_file", {"path": "bin.dat"}), "UTF-8")


async def test_fifo_does_not_hang(tree: Tree) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tree.root / "pipe")
    _refused(await _call(tree.tool(), "read_file", {"path": "pipe"}), "not a regular file")


async def test_unknown_tool_and_bad_arguments(tree: Tree) -> None:
    tool = tree.tool()
    _refused(await _call(tool, "delete_file", {"path": "hello.txt"}), "delete_file")
    _refused(await _call(tool, "read_file", {}), "path")
    _refused(await _call(tool, "read_file", {"path": 3}), "path", "string")
    _refused(await _call(tool, "list_directory", {"path": None}), "path")
    _refused(await _call(tool, "write_file", {"path": "x.txt"}), "content")
    _refused(await _call(tool, "write_file", {"path": "x.txt", "content": ["x"]}), "content")
    _refused(await _call(tool, "read_file", {"path": "a\x00b"}))
    _refused(await _call(tool, "write_file", {"path": "out/s.txt", "content": "\ud800"}), "Unicode")
    assert not (tree.out / "s.txt").exists()
    assert (tree.root / "hello.txt").exists()


def test_relative_roots_resolve_against_the_workspace_not_the_working_directory(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree.outside)
    tool = FilesystemTool(
        {"allowed_paths": ["."], "allowed_write_paths": ["out/../out"]}, tree.sandbox
    )
    assert tool.read_roots == (tree.root.resolve(),)
    assert tool.write_roots == (tree.out.resolve(),)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"allowed_paths": "/tmp"}, "allowed_paths"),
        ({"allowed_paths": [3]}, "allowed_paths[0]"),
        ({"allowed_read_paths": "."}, "allowed_read_paths"),
        ({"allowed_read_paths": [None]}, "allowed_read_paths[0]"),
        ({"allowed_write_paths": [""]}, "allowed_write_paths[0]"),
        ({"max_read_bytes": 0}, "max_read_bytes"),
        ({"max_read_bytes": "10"}, "max_read_bytes"),
        ({"max_read_bytes": True}, "max_read_bytes"),
    ],
)
def test_invalid_config_is_refused(tree: Tree, config: Mapping[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        FilesystemTool(config, tree.sandbox)
