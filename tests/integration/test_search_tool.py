"""tool-search against real files: what glob and grep find, what they refuse, where they stop."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from session_service.modules.search import SearchTool
from session_service.turns.protocols import ToolResult
from session_service.workspace import Sandbox


class Tree:
    """A workspace (`root`) with a few sources, and a folder outside it holding a secret."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.outside = base / "outside"
        for directory in (self.root / "src" / "pkg", self.root / "docs", self.outside):
            directory.mkdir(parents=True)
        self.write("src/app.py", "import os\n\ndef main():\n    print('Hello')\n")
        self.write("src/pkg/util.py", "def helper():\n    return 'hello world'\n")
        self.write("docs/guide.md", "# Guide\nSay hello to the app.\n")
        self.write("notes.txt", "first\nsecond\nthird\n")
        (self.outside / "secret.txt").write_text("hello from outside\n", encoding="utf-8")

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def tool(self, **config: Any) -> SearchTool:
        return SearchTool(config, Sandbox(self.root.resolve()))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


async def _ok(tool: SearchTool, name: str, **arguments: Any) -> dict[str, Any]:
    result = await tool.call(name, arguments)
    assert not result.is_error, result.content
    output = json.loads(result.content)
    assert isinstance(output, dict)
    return output


async def _refused(tool: SearchTool, name: str, *fragments: str, **arguments: Any) -> ToolResult:
    result = await tool.call(name, arguments)
    assert result.is_error, result.content
    for fragment in fragments:
        assert fragment in result.content
    return result


def test_specs_follow_amplifiers_glob_and_grep(tree: Tree) -> None:
    specs = {spec.name: spec for spec in tree.tool().specs()}
    assert set(specs) == {"glob", "grep"}
    grep = specs["grep"].parameters
    assert grep["required"] == ["pattern"]
    assert set(grep["properties"]) == {
        "pattern",
        "path",
        "output_mode",
        "-i",
        "-n",
        "-A",
        "-B",
        "-C",
        "glob",
        "type",
        "multiline",
        "head_limit",
        "offset",
        "include_ignored",
    }
    assert grep["properties"]["output_mode"]["enum"] == ["content", "files_with_matches", "count"]
    glob = specs["glob"].parameters
    assert glob["required"] == ["pattern"]
    assert set(glob["properties"]) == {"pattern", "path", "type", "exclude", "include_ignored"}
    assert glob["properties"]["type"]["enum"] == ["file", "dir", "any"]
    assert all(spec.description for spec in specs.values())


async def test_grep_lists_matching_files_by_default(tree: Tree) -> None:
    output = await _ok(tree.tool(), "grep", pattern="hello")
    assert output["output_mode"] == "files_with_matches"
    assert output["files"] == ["docs/guide.md", "src/pkg/util.py"]
    assert output["total_matches"] == 2
    assert "results_capped" not in output


async def test_grep_content_has_line_numbers_and_context(tree: Tree) -> None:
    output = await _ok(
        tree.tool(),
        "grep",
        pattern="^second$",
        path="notes.txt",
        output_mode="content",
        **{"-C": 1},
    )
    [result] = output["results"]
    assert result["file"] == "notes.txt"
    assert (result["line_number"], result["content"]) == (2, "second")
    assert [(c["line_number"], c["content"], c["is_match"]) for c in result["context"]] == [
        (1, "first", False),
        (2, "second", True),
        (3, "third", False),
    ]
    plain = await _ok(tree.tool(), "grep", pattern="third", output_mode="content", **{"-n": False})
    assert plain["results"] == [{"file": "notes.txt", "content": "third"}]


async def test_grep_case_insensitive_count_and_type_and_glob_filters(tree: Tree) -> None:
    tool = tree.tool()
    counted = await _ok(tool, "grep", pattern="HELLO", output_mode="count", **{"-i": True})
    assert counted["counts"] == {"docs/guide.md": 1, "src/app.py": 1, "src/pkg/util.py": 1}
    assert counted["total_matches"] == 3
    python = await _ok(tool, "grep", pattern="hello", type="python", **{"-i": True})
    assert python["files"] == ["src/app.py", "src/pkg/util.py"]
    braces = await _ok(tool, "grep", pattern="hello", glob="*.{md,txt}", **{"-i": True})
    assert braces["files"] == ["docs/guide.md"]
    nested = await _ok(tool, "grep", pattern="def", glob="src/pkg/**")
    assert nested["files"] == ["src/pkg/util.py"]
    await _refused(tool, "grep", "Unrecognized file type", pattern="x", type="cobol")


async def test_multiline_matches_span_lines(tree: Tree) -> None:
    output = await _ok(
        tree.tool(), "grep", pattern=r"def main\(\):.*print", multiline=True, output_mode="content"
    )
    [result] = output["results"]
    assert result["file"] == "src/app.py"
    assert result["line_number"] == 3
    assert result["content"] == "def main():\n    print('Hello')"
    single = await _ok(tree.tool(), "grep", pattern=r"def main\(\):.*print")
    assert single["files"] == []


async def test_a_regex_that_does_not_compile_is_a_tool_error(tree: Tree) -> None:
    await _refused(tree.tool(), "grep", "Invalid regex pattern", pattern="(unclosed")
    await _refused(tree.tool(), "grep", "Pattern is required", pattern="")
    await _refused(tree.tool(), "grep", "output_mode", pattern="x", output_mode="lines")
    await _refused(tree.tool(), "grep", "'-A'", pattern="x", **{"-A": -1})


@pytest.mark.parametrize("path", ["..", "../outside", "src/../../outside", "/etc", "/"])
async def test_paths_outside_the_sandbox_are_refused(tree: Tree, path: str) -> None:
    for name, pattern in (("grep", "hello"), ("glob", "*")):
        result = await _refused(tree.tool(), name, "Access denied", pattern=pattern, path=path)
        assert "hello from outside" not in result.content
        assert str(tree.outside) not in result.content


async def test_symlinks_are_neither_followed_nor_searched(tree: Tree) -> None:
    (tree.root / "etc").symlink_to("/etc", target_is_directory=True)
    (tree.root / "src" / "out").symlink_to(tree.outside, target_is_directory=True)
    (tree.root / "leak.txt").symlink_to(tree.outside / "secret.txt")
    tool = tree.tool()
    await _refused(tool, "grep", "Access denied", pattern="root", path="etc")
    await _refused(tool, "grep", "Access denied", pattern="hello", path="leak.txt")
    output = await _ok(tool, "grep", pattern="outside|root:", output_mode="content")
    assert output["results"] == []
    assert "3 symbolic link(s)" in output["notice"]
    found = await _ok(tool, "glob", pattern="**/*", type="any")
    assert {m["path"] for m in found["matches"]} == {
        "docs",
        "docs/guide.md",
        "notes.txt",
        "src",
        "src/app.py",
        "src/pkg",
        "src/pkg/util.py",
    }


async def test_a_symlink_that_stays_inside_may_be_named_as_the_path(tree: Tree) -> None:
    (tree.root / "code").symlink_to(tree.root / "src", target_is_directory=True)
    output = await _ok(tree.tool(), "grep", pattern="helper", path="code")
    # Resolved first, so the file is shown where it really is.
    assert output["files"] == ["src/pkg/util.py"]


async def test_operator_roots_are_searchable_when_the_bundle_allows_them(tree: Tree) -> None:
    sandbox = Sandbox(tree.root.resolve(), (tree.outside.resolve(),))
    tool = SearchTool({"allowed_paths": [".", str(tree.outside)]}, sandbox)
    output = await _ok(tool, "grep", pattern="outside", path=str(tree.outside))
    assert output["files"] == [str(tree.outside.resolve() / "secret.txt")]
    # The default is the workspace alone.
    await _refused(
        SearchTool({}, sandbox), "grep", "Access denied", pattern="x", path=str(tree.outside)
    )


async def test_ignored_folders_are_skipped_unless_asked_for(tree: Tree) -> None:
    tree.write("node_modules/lib/index.js", "hello from a dependency\n")
    tree.write(".git/HEAD", "hello ref\n")
    tool = tree.tool()
    assert (await _ok(tool, "grep", pattern="hello"))["files"] == [
        "docs/guide.md",
        "src/pkg/util.py",
    ]
    everything = await _ok(tool, "grep", pattern="hello", include_ignored=True)
    assert ".git/HEAD" in everything["files"]
    assert "node_modules/lib/index.js" in everything["files"]
    # Named explicitly, an ignored folder is searched.
    named = await _ok(tool, "grep", pattern="hello", path="node_modules")
    assert named["files"] == ["node_modules/lib/index.js"]
    # A bundle's list replaces the default one.
    custom = await _ok(tree.tool(exclusions=["docs", ".git"]), "grep", pattern="hello")
    assert custom["files"] == ["node_modules/lib/index.js", "src/pkg/util.py"]


async def test_result_caps_are_said_in_the_result(tree: Tree) -> None:
    for index in range(12):
        tree.write(f"many/file{index:02}.txt", "needle\n")
    tool = tree.tool(max_results=5)
    output = await _ok(tool, "grep", pattern="needle")
    assert output["files"] == [f"many/file{i:02}.txt" for i in range(5)]
    assert output["total_matches"] == 12
    assert output["results_capped"] is True
    assert "Showing entries 1-5 of 12" in output["notice"]
    # head_limit 0 is "as many as allowed": still the cap.
    unlimited = await _ok(tool, "grep", pattern="needle", head_limit=0)
    assert unlimited["matches_count"] == 5
    page = await _ok(tool, "grep", pattern="needle", head_limit=4, offset=10)
    assert page["files"] == ["many/file10.txt", "many/file11.txt"]
    assert "results_capped" not in page
    content = await _ok(tool, "grep", pattern="needle", output_mode="content", head_limit=3)
    assert [r["file"] for r in content["results"]] == [f"many/file{i:02}.txt" for i in range(3)]
    assert content["total_matches"] == 12
    counts = await _ok(tool, "grep", pattern="needle", output_mode="count", head_limit=2)
    assert len(counts["counts"]) == 2
    assert counts["results_capped"] is True
    globbed = await _ok(tool, "glob", pattern="many/*.txt")
    assert (globbed["count"], globbed["total_files"], globbed["results_capped"]) == (5, 12, True)
    assert "Showing 5 of 12" in globbed["notice"]


async def test_big_binary_and_special_files_are_skipped(tree: Tree) -> None:
    tree.write("big.log", "needle\n" + "x" * 5000)
    (tree.root / "blob.bin").write_bytes(b"needle\x00\x01\x02")
    os.mkfifo(tree.root / "pipe")  # reading a FIFO would block: it must be passed over
    tree.write("small.txt", "needle\n")
    output = await _ok(tree.tool(max_file_size=1000), "grep", pattern="needle")
    assert output["files"] == ["small.txt"]
    assert "Skipped 1 file(s) larger than 1000 bytes (max_file_size)" in output["notice"]
    assert "Skipped 1 binary file(s)" in output["notice"]
    # Named directly, a too-big file is skipped and said so all the same.
    direct = await _ok(tree.tool(max_file_size=1000), "grep", pattern="needle", path="big.log")
    assert direct["files"] == []
    assert "max_file_size" in direct["notice"]


async def test_the_walk_stops_at_max_files(tree: Tree) -> None:
    for index in range(30):
        tree.write(f"wide/f{index:02}.txt", "needle\n")
    output = await _ok(tree.tool(max_files=10), "grep", pattern="needle", path="wide")
    assert output["total_matches"] == 10
    assert "Stopped after walking 10 entries (max_files)" in output["notice"]
    globbed = await _ok(tree.tool(max_files=10), "glob", pattern="wide/*")
    assert "max_files" in globbed["notice"]


async def test_grep_stops_reading_at_max_bytes_scanned(tree: Tree) -> None:
    for index in range(10):
        tree.write(f"heavy/f{index}.txt", "needle\n" + "y" * 993)
    output = await _ok(tree.tool(max_bytes_scanned=3500), "grep", pattern="needle", path="heavy")
    assert output["total_matches"] == 3
    assert "max_bytes_scanned" in output["notice"]


async def test_long_lines_are_clipped(tree: Tree) -> None:
    tree.write("minified.js", "var needle=1;" + "a" * 5000 + "\n")
    output = await _ok(tree.tool(), "grep", pattern="needle", output_mode="content")
    [result] = output["results"]
    assert len(result["content"]) < 1100
    assert "more characters" in result["content"]


async def test_glob_sorts_newest_first_and_filters_types(tree: Tree) -> None:
    for index, name in enumerate(("old.py", "mid.py", "new.py")):
        path = tree.write(f"lib/{name}", "")
        os.utime(path, (1_000_000 + index, 1_000_000 + index))
    tool = tree.tool()
    output = await _ok(tool, "glob", pattern="lib/*.py")
    assert [m["path"] for m in output["matches"]] == ["lib/new.py", "lib/mid.py", "lib/old.py"]
    assert output["matches"][0] == {"path": "lib/new.py", "type": "file", "size": 0}
    deep = await _ok(tool, "glob", pattern="**/*.py", exclude=["lib/*"])
    assert {m["path"] for m in deep["matches"]} == {"src/app.py", "src/pkg/util.py"}
    dirs = await _ok(tool, "glob", pattern="**", type="dir", path="src")
    assert [m["path"] for m in dirs["matches"]] == ["src/pkg"]
    top = await _ok(tool, "glob", pattern="*.txt")
    assert [m["path"] for m in top["matches"]] == ["notes.txt"]
    await _refused(tool, "glob", "must be relative", pattern="/etc/*")
    await _refused(tool, "glob", "'..'", pattern="../outside/*")
    await _refused(tool, "glob", "not a directory", pattern="*", path="notes.txt")
    await _refused(tool, "glob", "Path not found", pattern="*", path="missing")


async def test_unknown_tool_and_bad_arguments_are_errors(tree: Tree) -> None:
    tool = tree.tool()
    await _refused(tool, "find", "Unknown tool", pattern="x")
    await _refused(tool, "grep", "must be a string", pattern=3)
    await _refused(tool, "grep", "true or false", pattern="x", multiline="yes")
    await _refused(tool, "glob", "list of glob patterns", pattern="*", exclude="x")


def test_settings_that_leave_the_sandbox_are_found_before_a_turn(tree: Tree) -> None:
    sandbox = Sandbox(tree.root.resolve())
    assert SearchTool.check_config({"allowed_paths": ["."]}, sandbox) == []
    for entry in ("/etc", "..", "../outside"):
        [(key, message)] = SearchTool.check_config({"allowed_paths": [entry]}, sandbox)
        assert key == "allowed_paths"
        assert "allowed_paths[0]" in message
    with pytest.raises(ValueError, match="allowed_paths"):
        SearchTool({"allowed_paths": ["/etc"]}, sandbox)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_results", 0),
        ("max_file_size", -1),
        ("max_files", "many"),
        ("max_bytes_scanned", True),
        ("exclusions", "node_modules"),
        ("default_limits", {"content": 0}),
    ],
)
def test_bad_caps_are_refused(tree: Tree, key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key.split("_")[0]):
        tree.tool(**{key: value})


def test_default_limits_never_exceed_max_results(tree: Tree) -> None:
    tool = tree.tool(max_results=50, default_limits={"count": 10})
    assert tool.limits == {"files_with_matches": 50, "content": 50, "count": 10}


# --- hostile patterns ----------------------------------------------------------------------

# Backtracks exponentially on a line of `a`s that does not end the way it wants: with `re` this
# line held the interpreter lock for many seconds, with every other session waiting on it.
CATASTROPHIC = r"(a|aa)+$"
CATASTROPHIC_LINE = "a" * 38 + "b\n"


@pytest.mark.timeout(15)
async def test_a_catastrophic_regex_is_a_timeout_error(tree: Tree) -> None:
    tree.write("slow.txt", "ok\n" + CATASTROPHIC_LINE)
    result = await _refused(
        tree.tool(),
        "grep",
        "The regular expression took too long (more than 2 s of matching in this call)",
        "simplify it",
        pattern=CATASTROPHIC,
    )
    assert "slow.txt" not in result.content
    # The other output modes, with a bundle's shorter limit.
    for mode in ("content", "count"):
        await _refused(
            tree.tool(regex_timeout_seconds=0.5),
            "grep",
            "more than 0.5 s",
            pattern=CATASTROPHIC,
            output_mode=mode,
        )
    # Multiline mode searches the whole file at once: bounded the same way.
    await _refused(
        tree.tool(regex_timeout_seconds=0.5),
        "grep",
        "more than 0.5 s",
        pattern=CATASTROPHIC,
        multiline=True,
    )


@pytest.mark.timeout(15)
async def test_the_event_loop_runs_while_a_slow_regex_matches(tree: Tree) -> None:
    tree.write("slow.txt", CATASTROPHIC_LINE)
    grep = asyncio.create_task(tree.tool().call("grep", {"pattern": CATASTROPHIC}))
    ticks = 0
    while ticks < 10 and not grep.done():
        await asyncio.sleep(0.05)
        ticks += 1
    # The loop got its turns while the match ran, rather than only after it ended.
    assert (ticks, grep.done()) == (10, False)
    result = await grep
    assert result.is_error
    assert "took too long" in result.content


@pytest.mark.timeout(15)
async def test_the_matching_time_is_one_budget_for_all_files(tree: Tree) -> None:
    # Each line alone matches well within the limit; thirty of them do not.
    for index in range(30):
        tree.write(f"many/f{index:02}.txt", "a" * 28 + "b\n")
    await _refused(
        tree.tool(regex_timeout_seconds=1.0),
        "grep",
        "took too long (more than 1 s of matching in this call)",
        pattern=CATASTROPHIC,
        path="many",
        output_mode="count",
    )


@pytest.mark.timeout(15)
async def test_a_catastrophic_glob_is_a_timeout_error(tree: Tree) -> None:
    tree.write("a" * 60 + "d", "")
    pattern = "{a,aa}" * 30
    tool = tree.tool(regex_timeout_seconds=0.5)
    await _refused(tool, "glob", "The glob pattern took too long", pattern=pattern)
    # grep's glob filter shares grep's budget.
    await _refused(tool, "grep", "took too long", pattern="x", glob=pattern)


async def test_a_pattern_that_compiles_to_millions_of_nodes_is_refused(tree: Tree) -> None:
    await _refused(
        tree.tool(),
        "grep",
        "Invalid regex pattern",
        "counted repeats",
        pattern=r"(?:(?:(?:a{100}){100}){100}){100}",
    )
    # Small counts are fine.
    output = await _ok(tree.tool(), "grep", pattern=r"hel{2}o", output_mode="count")
    assert output["counts"] == {"docs/guide.md": 1, "src/pkg/util.py": 1}


async def test_patterns_the_regex_package_adds_work(tree: Tree) -> None:
    tree.write("unicode.txt", "naïve café\nplain\n")
    output = await _ok(tree.tool(), "grep", pattern=r"\p{L}+é", output_mode="content")
    assert [r["content"] for r in output["results"]] == ["naïve café"]


def test_a_bundle_may_only_lower_the_regex_timeout(tree: Tree) -> None:
    assert tree.tool().regex_timeout == 2.0
    assert tree.tool(regex_timeout_seconds=0.25).regex_timeout == 0.25
    for above in (600, 10**400, float("inf")):
        assert tree.tool(regex_timeout_seconds=above).regex_timeout == 2.0
    for bad in (0, -1, "2", True, float("nan"), [1]):
        with pytest.raises(ValueError, match="regex_timeout_seconds"):
            tree.tool(regex_timeout_seconds=bad)
    grep = next(
        spec for spec in tree.tool(regex_timeout_seconds=0.5).specs() if spec.name == "grep"
    )
    assert "0.5 s matching" in grep.description
