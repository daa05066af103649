"""tool-search's patterns: which paths a glob matches, and which lines a regex finds."""

from __future__ import annotations

import re
import threading

import pytest
import regex  # type: ignore[import-untyped]

from session_service.modules.search import (
    MAX_PATTERN_EXPANSION,
    _Budget,
    _GrepPattern,
    _line_safe,
    _matching_lines,
    _split_lines,
    compile_pattern,
    glob_regex,
    pattern_expansion,
)


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


# --- the model's regular expressions -------------------------------------------------------

LINES_TEXTS = [
    "alpha beta\n\ngamma  delta\r\nfoo(bar)\n  indented\nend",
    "x\nxx\n\nxxx\n",
    "",
    "\n\n",
    "no newline at the end",
    "tab\there\nsp ace\n\nlast\r",
    "Straße STRASSE\nİstanbul\n\u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2\n",
    "a\nb\na b\nab\n",
]
LINES_PATTERNS = [
    "a",
    "^$",
    "^",
    "$",
    r"\s",
    r"\s+",
    r"a\s*b",
    r"a\s+b",
    r"[^z]+",
    r"[^x]*x",
    "x*",
    r"\bbeta\b",
    r"\Bet",
    r"^\s+\w+$",
    r"\w+\s*$",
    r"foo\(bar\)",
    r"(?i)straße",
    "ß",
    r"(a)\s\1?",
    "e.d",
    r"[\n]",
    r"\n",
    r"(?=b)",
    r"\Aa",
    r"x\Z",
    "gamma|last|^b$",
]


@pytest.mark.parametrize("pattern", LINES_PATTERNS)
@pytest.mark.parametrize("ignore_case", [False, True])
def test_lines_found_in_the_whole_text_are_those_re_finds_line_by_line(
    pattern: str, ignore_case: bool
) -> None:
    # The joined-text search is a shortcut: each line must still match as it would alone,
    # and as it did with `re`.
    flags = re.IGNORECASE if ignore_case else 0
    for text in LINES_TEXTS:
        lines = _split_lines(text)
        expected = [i for i, line in enumerate(lines) if re.search(pattern, line, flags)]
        grep = _GrepPattern(
            compile_pattern(pattern, flags),
            compile_pattern(pattern, flags | regex.MULTILINE) if _line_safe(pattern) else None,
        )
        for first_only in (False, True):
            budget = _Budget(100, 100, threading.Event(), 5.0, "too slow")
            found = _matching_lines(lines, grep, budget, first_only)
            if first_only:
                assert bool(found) == bool(expected), (pattern, text)
                assert set(found) <= set(expected), (pattern, text)
            else:
                assert found == expected, (pattern, text)
            assert budget.whole_text


@pytest.mark.parametrize("pattern", [r"(?=x)", r"(?<!a)b", r"(?i)x", r"\Ax", r"x\Z", r"(*SKIP)"])
def test_patterns_that_see_past_a_match_are_searched_line_by_line(pattern: str) -> None:
    assert not _line_safe(pattern)
    assert _line_safe(r"(?:a|b)\s+[(]c\)$")


@pytest.mark.parametrize(
    ("pattern", "expansion"),
    [
        ("abc", 3),
        (r"a{3}", 3),
        (r"(?:ab){10}", 20),
        (r"(?:a{10}|b{5}){4}", 60),
        (r"(?:(?:a{100}){100}){100}", MAX_PATTERN_EXPANSION + 1),
        (r"[{]{1000}", 1000),
        (r"\{1000}", 6),
        (r"x{1,100000}", 1),
        ("a{" + "9" * 50 + "}", MAX_PATTERN_EXPANSION + 1),
    ],
)
def test_counted_repeats_multiply_when_nested(pattern: str, expansion: int) -> None:
    # An over-estimate (group syntax and `|` count as atoms), never an under-estimate.
    assert expansion <= pattern_expansion(pattern) <= min(2 * expansion, MAX_PATTERN_EXPANSION + 1)


def test_a_pattern_that_would_compile_to_millions_of_nodes_is_refused() -> None:
    with pytest.raises(ValueError, match="counted repeats"):
        compile_pattern(r"(?:(?:(?:a{100}){100}){100}){100}")
    with pytest.raises(ValueError, match="missing \\)"):
        compile_pattern("(unclosed")
    # A named list no caller supplies is an invalid pattern, not a crash.
    with pytest.raises(ValueError, match="named list"):
        compile_pattern(r"\L<words>")
    assert compile_pattern(r"\d{4}-\d{2}").search("on 2026-12-01")


@pytest.mark.parametrize(
    ("pattern", "flags", "text"),
    [
        ("STRASSE", re.IGNORECASE, "straße"),
        ("K", re.IGNORECASE, "\u212a"),
        ("\u017f", re.IGNORECASE, "S"),
        (r"^b.c$", re.MULTILINE | re.DOTALL, "a\nb\nc\n"),
        (r"a.b", re.DOTALL, "a\nb"),
        (r"\w+", 0, "naïve"),
        (r"\d", 0, "٣"),
        ("a{,2}b", 0, "aab"),
        ("x++y", 0, "xxy"),
    ],
)
def test_the_options_grep_offers_mean_what_they_meant_with_re(
    pattern: str, flags: int, text: str
) -> None:
    expected = re.search(pattern, text, flags)
    found = compile_pattern(pattern, flags).search(text)
    assert (found and found.span()) == (expected and expected.span())


def test_compiled_patterns_leave_nothing_behind_in_the_regex_package() -> None:
    # A tenant sends as many distinct patterns as it likes: none may stay in memory.
    tables = (regex._main._cache, regex._main._locale_sensitive)
    before = [len(table) for table in tables]
    for index in range(50):
        compile_pattern(f"tenant pattern {index}")
        with pytest.raises(ValueError, match="missing"):
            compile_pattern(f"(broken {index}")
    assert [len(table) for table in tables] == before
