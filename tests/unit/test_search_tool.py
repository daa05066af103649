"""tool-search's glob patterns: which workspace-relative paths each one matches."""

from __future__ import annotations

import pytest

from session_service.modules.search import glob_regex


@pytest.mark.parametrize(
    ("pattern", "anywhere", "matches", "misses"),
    [
        ("*.py", False, ["a.py"], ["src/a.py", "a.pyc", "a.txt"]),
        ("*.py", True, ["a.py", "src/a.py", "src/deep/a.py"], ["a.pyc", "src/a.txt"]),
        ("**/*.py", False, ["a.py", "src/a.py", "src/x/y/a.py"], ["a.pyx"]),
        ("src/**/*.ts", False, ["src/a.ts", "src/x/y/b.ts"], ["a.ts", "lib/src/a.ts"]),
        ("src/**", False, ["src/a", "src/x/y"], ["lib/a"]),
        ("*.{ts,tsx}", True, ["a.ts", "x/b.tsx"], ["c.tsv", "d.js"]),
        ("file?.txt", False, ["file1.txt"], ["file10.txt", "file/.txt"]),
        ("[ab]*.md", False, ["a.md", "b2.md"], ["c.md"]),
        ("[!ab]*.md", False, ["c.md"], ["a.md"]),
        ("/docs/*.md", True, ["docs/x.md"], ["y/docs/x.md"]),
        ("a+b(c).txt", False, ["a+b(c).txt"], ["aab(c).txt"]),
    ],
)
def test_glob_patterns(pattern: str, anywhere: bool, matches: list[str], misses: list[str]) -> None:
    regex = glob_regex(pattern, anywhere=anywhere)
    for path in matches:
        assert regex.match(path), (pattern, path)
    for path in misses:
        assert not regex.match(path), (pattern, path)


def test_a_star_never_crosses_a_folder() -> None:
    assert not glob_regex("src/*", anywhere=False).match("src/a/b")


def test_an_unclosed_bracket_is_taken_literally() -> None:
    assert glob_regex("a[b", anywhere=False).match("a[b")
