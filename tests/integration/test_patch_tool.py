"""tool-apply-patch against real files: V4A patches and unified diffs, all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from session_service.modules.patch import ApplyPatchTool
from session_service.turns.protocols import ToolResult
from session_service.workspace import Sandbox


class Tree:
    """A workspace (`root`) with two files, and a folder outside it."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.outside = base / "outside"
        for directory in (self.root / "src", self.outside):
            directory.mkdir(parents=True)
        self.write("src/app.py", "import os\n\n\ndef main():\n    print('hi')\n    return 0\n")
        self.write("notes.txt", "one\ntwo\nthree\nfour\nfive\n")
        (self.outside / "secret.txt").write_text("top secret\n", encoding="utf-8")

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text(encoding="utf-8")

    def files(self) -> dict[str, bytes]:
        """Every file under the workspace and the outside folder, by path: the whole state."""
        base = self.root.parent
        return {
            str(p.relative_to(base)): p.read_bytes()
            for p in sorted(base.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    def tool(self, **config: Any) -> ApplyPatchTool:
        return ApplyPatchTool(config, Sandbox(self.root.resolve()))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


async def _apply(tool: ApplyPatchTool, patch: str) -> ToolResult:
    return await tool.call("apply_patch", {"patch": patch})


async def _refused_without_change(tree: Tree, patch: str, *fragments: str) -> str:
    before = tree.files()
    result = await _apply(tree.tool(), patch)
    assert result.is_error, result.content
    for fragment in fragments:
        assert fragment in result.content, result.content
    assert tree.files() == before
    return result.content


def test_spec_follows_amplifiers_apply_patch(tree: Tree) -> None:
    [spec] = tree.tool().specs()
    assert spec.name == "apply_patch"
    assert spec.parameters["required"] == ["patch"]
    assert set(spec.parameters["properties"]) == {"patch"}
    assert "*** Begin Patch" in spec.description


async def test_a_v4a_patch_adds_updates_moves_and_deletes(tree: Tree) -> None:
    patch = """*** Begin Patch
*** Add File: lib/new/helper.py
+def helper():
+    return 42
*** Update File: src/app.py
@@ def main():
-    print('hi')
+    print('hello')
     return 0
*** Update File: notes.txt
*** Move to: archive/notes.md
@@
 two
-three
+THREE
 four
*** Delete File: src/app.py
*** End Patch
"""
    tree.write("src/app.py", "import os\n\n\ndef main():\n    print('hi')\n    return 0\n")
    result = await _apply(tree.tool(), patch.replace("*** Delete File: src/app.py\n", ""))
    assert result == ToolResult(
        "A lib/new/helper.py\nM src/app.py\nR notes.txt -> archive/notes.md"
    )
    assert tree.read("lib/new/helper.py") == "def helper():\n    return 42\n"
    assert (
        tree.read("src/app.py") == "import os\n\n\ndef main():\n    print('hello')\n    return 0\n"
    )
    assert tree.read("archive/notes.md") == "one\ntwo\nTHREE\nfour\nfive\n"
    assert not (tree.root / "notes.txt").exists()
    deleted = await _apply(
        tree.tool(), "*** Begin Patch\n*** Delete File: src/app.py\n*** End Patch"
    )
    assert deleted == ToolResult("D src/app.py")
    assert not (tree.root / "src" / "app.py").exists()


async def test_a_unified_diff_with_several_files(tree: Tree) -> None:
    patch = """diff --git a/notes.txt b/notes.txt
index 1111111..2222222 100644
--- a/notes.txt
+++ b/notes.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
@@ -4,2 +4,3 @@
 four
 five
+six
diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -5,2 +5,2 @@ def main():
     print('hi')
-    return 0
+    return 1
diff --git a/docs/readme.md b/docs/readme.md
new file mode 100644
--- /dev/null
+++ b/docs/readme.md
@@ -0,0 +1,2 @@
+# Readme
+No newline here
\\ No newline at end of file
"""
    result = await _apply(tree.tool(), patch)
    assert result == ToolResult("M notes.txt\nM src/app.py\nA docs/readme.md")
    assert tree.read("notes.txt") == "one\nTWO\nthree\nfour\nfive\nsix\n"
    assert tree.read("src/app.py").endswith("    print('hi')\n    return 1\n")
    assert tree.read("docs/readme.md") == "# Readme\nNo newline here"
    removal = "--- a/docs/readme.md\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-# Readme\n-No newline here\n"
    assert await _apply(tree.tool(), removal) == ToolResult("D docs/readme.md")
    assert not (tree.root / "docs" / "readme.md").exists()


async def test_hunks_are_found_by_content_when_line_numbers_are_off(tree: Tree) -> None:
    tree.write("notes.txt", "zero\nextra\none\ntwo\nthree\nfour\nfive\n")
    patch = "--- notes.txt\n+++ notes.txt\n@@ -2,3 +2,3 @@\n two\n-three\n+3\n four\n"
    assert await _apply(tree.tool(), patch) == ToolResult("M notes.txt")
    assert tree.read("notes.txt") == "zero\nextra\none\ntwo\n3\nfour\nfive\n"


async def test_whitespace_differences_are_tolerated_and_the_files_own_text_kept(
    tree: Tree,
) -> None:
    tree.write("notes.txt", "one  \n\ttwo\nthree\n")
    patch = "*** Begin Patch\n*** Update File: notes.txt\n one\n two\n-three\n+3\n*** End Patch"
    assert await _apply(tree.tool(), patch) == ToolResult("M notes.txt")
    assert tree.read("notes.txt") == "one  \n\ttwo\n3\n"


async def test_crlf_files_keep_their_line_endings(tree: Tree) -> None:
    (tree.root / "dos.txt").write_bytes(b"a\r\nb\r\nc\r\n")
    patch = "*** Begin Patch\n*** Update File: dos.txt\n a\n-b\n+B\n c\n*** End Patch"
    assert await _apply(tree.tool(), patch) == ToolResult("M dos.txt")
    assert (tree.root / "dos.txt").read_bytes() == b"a\r\nB\r\nc\r\n"


async def test_a_failing_hunk_changes_no_file_and_says_which(tree: Tree) -> None:
    patch = """*** Begin Patch
*** Add File: created.txt
+new
*** Update File: notes.txt
@@
-one
+ONE
@@
-seven
+SEVEN
*** Delete File: src/app.py
*** End Patch"""
    message = await _refused_without_change(tree, patch, "'notes.txt'", "hunk 2", "-seven")
    assert "read it and retry" in message
    unified = "--- a/notes.txt\n+++ b/notes.txt\n@@ -1,2 +1,2 @@\n one\n-zwei\n+TWO\n"
    await _refused_without_change(tree, unified, "'notes.txt'", "hunk 1 (@@ -1,2 +1,2 @@)")


async def test_a_write_that_fails_puts_back_the_files_already_changed(tree: Tree) -> None:
    # Planned in memory this is consistent, but on disk `clash` becomes a file before
    # `clash/inner.txt` needs it to be a folder: the third write fails after two succeed.
    patch = """*** Begin Patch
*** Update File: notes.txt
@@
-one
+ONE
*** Delete File: src/app.py
*** Add File: clash
+a file
*** Add File: clash/inner.txt
+under a file
*** End Patch"""
    message = await _refused_without_change(tree, patch, "'clash/inner.txt'", "No file was changed")
    assert str(tree.root) not in message
    assert not (tree.root / "clash").exists()
    assert sorted(p.name for p in tree.root.rglob("*")) == ["app.py", "notes.txt", "src"]


@pytest.mark.parametrize(
    "path",
    ["../outside/secret.txt", "src/../../outside/new.txt", "/etc/passwd", "/tmp/escape.txt"],
)
async def test_paths_outside_the_workspace_are_refused(tree: Tree, path: str) -> None:
    for patch in (
        f"*** Begin Patch\n*** Add File: {path}\n+x\n*** End Patch",
        f"*** Begin Patch\n*** Delete File: {path}\n*** End Patch",
        f"--- /dev/null\n+++ {path}\n@@ -0,0 +1 @@\n+x\n",
        f"*** Begin Patch\n*** Update File: notes.txt\n*** Move to: {path}\n@@\n-one\n+1\n"
        + "*** End Patch",
    ):
        await _refused_without_change(tree, patch, "Access denied")


async def test_symlinks_out_of_the_workspace_are_refused(tree: Tree) -> None:
    (tree.root / "etc").symlink_to("/etc", target_is_directory=True)
    (tree.root / "out").symlink_to(tree.outside, target_is_directory=True)
    (tree.root / "leak.txt").symlink_to(tree.outside / "secret.txt")
    for patch in (
        "*** Begin Patch\n*** Add File: etc/evil.conf\n+x\n*** End Patch",
        "*** Begin Patch\n*** Update File: leak.txt\n@@\n-top secret\n+public\n*** End Patch",
        "*** Begin Patch\n*** Delete File: out/secret.txt\n*** End Patch",
    ):
        await _refused_without_change(tree, patch, "Access denied")
    assert (tree.outside / "secret.txt").read_text(encoding="utf-8") == "top secret\n"


async def test_nul_and_malformed_patches_are_refused(tree: Tree) -> None:
    await _refused_without_change(
        tree, "*** Begin Patch\n*** Add File: a\x00b\n+x\n*** End Patch", "NUL"
    )
    await _refused_without_change(tree, "just some text", "*** Begin Patch")
    await _refused_without_change(tree, "*** Begin Patch\n*** Add File: a.txt\n+x\n", "End Patch")
    await _refused_without_change(
        tree, "*** Begin Patch\n*** Add File: a.txt\nmissing plus\n*** End Patch", "'+'"
    )
    await _refused_without_change(tree, "*** Begin Patch\n*** End Patch", "no operations")
    await _refused_without_change(
        tree, "--- a/notes.txt\n+++ b/notes.txt\n@@ -1 +1 @@\n-one\n+1\nstray\n+line\n", "outside"
    )
    assert (await _apply(tree.tool(), "")).is_error
    assert (await tree.tool().call("apply_patch", {})).content == "patch is required"
    assert (await tree.tool().call("edit", {"patch": "x"})).is_error


async def test_add_update_and_delete_check_what_exists(tree: Tree) -> None:
    await _refused_without_change(
        tree, "*** Begin Patch\n*** Add File: notes.txt\n+x\n*** End Patch", "already exists"
    )
    await _refused_without_change(
        tree, "*** Begin Patch\n*** Delete File: missing.txt\n*** End Patch", "File not found"
    )
    await _refused_without_change(
        tree,
        "*** Begin Patch\n*** Update File: src\n@@\n-x\n+y\n*** End Patch",
        "is a directory",
    )
    await _refused_without_change(
        tree,
        "*** Begin Patch\n*** Update File: notes.txt\n*** Move to: src/app.py\n@@\n-one\n+1\n"
        + "*** End Patch",
        "that file exists",
    )
    partial = "--- a/notes.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-one\n-two\n"
    await _refused_without_change(tree, partial, "does not remove all")
    (tree.root / "bin.dat").write_bytes(b"\xff\xfe\x00")
    await _refused_without_change(
        tree, "*** Begin Patch\n*** Update File: bin.dat\n@@\n-x\n+y\n*** End Patch", "UTF-8"
    )


async def test_writable_folders_follow_the_config(tree: Tree) -> None:
    (tree.root / "out").mkdir()
    tool = tree.tool(allowed_write_paths=["out"], denied_write_paths=["out/locked"])
    ok = await _apply(tool, "*** Begin Patch\n*** Add File: out/a.txt\n+a\n*** End Patch")
    assert ok == ToolResult("A out/a.txt")
    for path in ("notes.txt", "out/locked/b.txt"):
        result = await _apply(tool, f"*** Begin Patch\n*** Add File: {path}\n+b\n*** End Patch")
        assert result.is_error
        assert "Access denied" in result.content


def test_settings_that_leave_the_sandbox_are_found_before_a_turn(tree: Tree) -> None:
    sandbox = Sandbox(tree.root.resolve())
    assert ApplyPatchTool.check_config({"allowed_write_paths": ["src"]}, sandbox) == []
    for entry in ("/etc", "..", "../outside"):
        [(key, _)] = ApplyPatchTool.check_config({"allowed_write_paths": [entry]}, sandbox)
        assert key == "allowed_write_paths"
    [(key, _)] = ApplyPatchTool.check_config({"denied_write_paths": "src"}, sandbox)
    assert key == "denied_write_paths"
    with pytest.raises(ValueError, match="allowed_write_paths"):
        ApplyPatchTool({"allowed_write_paths": ["/etc"]}, sandbox)
