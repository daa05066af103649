"""In-place edits of a stored bundle document: add or remove modules and includes.

The edit itself is made on ruamel.yaml's round-trip model (comments, quoting and key order
kept). ruamel still normalizes a little on output (blank lines that hold spaces, some
spacing), so the re-dumped YAML is not pasted back whole: its line diff against an
unedited re-dump is applied to the original text, three-way. Lines the edit did not touch
therefore stay byte for byte, and the frontmatter delimiters and markdown body are put
back exactly as they were.
"""

from __future__ import annotations

import io
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from shared.bundle.document import DocumentParts, split_parts
from shared.bundle.loader import load_yaml
from shared.bundle.model import Limits, Severity
from shared.errors import FieldViolation, InvalidArgument, NotFound

MODULE_KINDS = ("tools", "providers", "hooks")
_FIELD = "yaml_content"


def add_module(
    text: str,
    kind: str,
    module: str,
    source: str | None,
    config: Mapping[str, Any] | None,
) -> str:
    """Adds a module entry, or merges `source`/`config` into the entry already there."""
    _check_kind(kind)

    def edit(root: CommentedMap) -> None:
        entries = _list_at(root, kind)
        for entry in entries:
            if isinstance(entry, CommentedMap) and entry.get("module") == module:
                _merge_into_entry(entry, source, config)
                return
        entry = CommentedMap()
        entry["module"] = module
        if source is not None:
            entry["source"] = source
        if config:
            entry["config"] = _commented(config)
        entries.append(entry)

    return _Editor(text).apply(edit)


def remove_module(text: str, kind: str, module: str) -> str:
    """Removes every entry for `module`; NotFound (MODULE_NOT_FOUND) when there is none."""
    _check_kind(kind)

    def edit(root: CommentedMap) -> None:
        removed = _remove_items(
            root, kind, lambda item: isinstance(item, Mapping) and item.get("module") == module
        )
        if not removed:
            raise NotFound(
                f"{kind} has no module {module!r}.",
                reason="MODULE_NOT_FOUND",
                resource_type=kind,
                resource_name=module,
            )

    return _Editor(text).apply(edit)


def add_include(text: str, bundle: str) -> str:
    """Appends `bundle` to `includes` unless it is already included, in either form.

    It is written the way the list's last entry is: `- bundle: x` after a mapping entry
    (as Amplifier bundles write includes), a plain string otherwise.
    """

    def edit(root: CommentedMap) -> None:
        includes = _list_at(root, "includes")
        if any(_is_include(item, bundle) for item in includes):
            return
        last = includes[-1] if includes else None
        if isinstance(last, Mapping):
            entry = CommentedMap()
            entry["bundle"] = bundle
            if isinstance(last, CommentedMap) and last.fa.flow_style():
                entry.fa.set_flow_style()
            includes.append(entry)
        else:
            includes.append(bundle)

    return _Editor(text).apply(edit)


def remove_include(text: str, bundle: str) -> str:
    """Removes `bundle` from `includes`; NotFound (INCLUDE_NOT_FOUND) when it is absent."""

    def edit(root: CommentedMap) -> None:
        if not _remove_items(root, "includes", lambda item: _is_include(item, bundle)):
            raise NotFound(
                f"includes has no bundle {bundle!r}.",
                reason="INCLUDE_NOT_FOUND",
                resource_type="include",
                resource_name=bundle,
            )

    return _Editor(text).apply(edit)


# The round-trip model --------------------------------------------------------------------


@dataclass(frozen=True)
class AddModule:
    """Add a module to `tools`/`providers`/`hooks`, or merge config into the one there."""

    kind: str
    module: str
    source: str | None = None
    config: Mapping[str, Any] | None = None

    def apply(self, text: str) -> str:
        """The edited document."""
        return add_module(text, self.kind, self.module, self.source, self.config)


@dataclass(frozen=True)
class RemoveModule:
    """Remove a module from `tools`/`providers`/`hooks`."""

    kind: str
    module: str

    def apply(self, text: str) -> str:
        """The edited document."""
        return remove_module(text, self.kind, self.module)


@dataclass(frozen=True)
class AddInclude:
    """Add a bundle to `includes`, in the form the list already uses."""

    bundle: str

    def apply(self, text: str) -> str:
        """The edited document."""
        return add_include(text, self.bundle)


@dataclass(frozen=True)
class RemoveInclude:
    """Remove a bundle from `includes`, keeping comments that head other entries."""

    bundle: str

    def apply(self, text: str) -> str:
        """The edited document."""
        return remove_include(text, self.bundle)


Edit = AddModule | RemoveModule | AddInclude | RemoveInclude


def _check_kind(kind: str) -> None:
    if kind not in MODULE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MODULE_KINDS)}, not {kind!r}")


def _is_include(item: Any, bundle: str) -> bool:
    if isinstance(item, Mapping):
        return bool(item.get("bundle") == bundle)
    return bool(item == bundle)


def _list_at(root: CommentedMap, key: str) -> CommentedSeq:
    """The list under `key`, created at the end of the document when absent or empty."""
    value = root.get(key)
    if value is None:
        value = CommentedSeq()
        root[key] = value
    if not isinstance(value, CommentedSeq):
        raise _invalid(f"{key} is not a list")
    return value


def _remove_items(root: CommentedMap, key: str, matches: Callable[[Any], bool]) -> bool:
    """Deletes matching items of the list at `key`, and the key once the list is empty."""
    value = root.get(key)
    if not isinstance(value, CommentedSeq):
        return False
    doomed = [index for index, item in enumerate(value) if matches(item)]
    for index in reversed(doomed):
        del value[index]
    if doomed and not value:
        del root[key]
    return bool(doomed)


def _merge_into_entry(
    entry: CommentedMap, source: str | None, config: Mapping[str, Any] | None
) -> None:
    # Keys that come from a `<<` merge belong to a shared anchor: override them on the
    # entry rather than change what every other user of the anchor sees.
    own = [key for key, _ in entry.non_merged_items()]
    if source is not None and entry.get("source") != source:
        if "source" in own or "module" not in own:
            entry["source"] = source
        else:
            # Right after `module`, where people write it.
            entry.insert(own.index("module") + 1, "source", source)
    if not config:
        return
    existing = entry.get("config")
    if not isinstance(existing, CommentedMap):
        entry["config"] = _commented(config)
    elif "config" in own:
        _deep_merge(existing, config)
    else:
        copied = _commented(existing)
        _deep_merge(copied, config)
        entry["config"] = copied


def _deep_merge(target: CommentedMap, changes: Mapping[str, Any]) -> None:
    """New values win; mappings present on both sides are merged key by key."""
    for key, value in changes.items():
        current = target.get(key)
        if isinstance(current, CommentedMap) and isinstance(value, Mapping):
            _deep_merge(current, value)
        elif key not in target or current != value:
            target[key] = _commented(value)


def _commented(value: Any) -> Any:
    """Plain data as round-trip nodes, so that it dumps in block style like its neighbours."""
    if isinstance(value, Mapping):
        mapping = CommentedMap()
        for key, item in value.items():
            mapping[key] = _commented(item)
        return mapping
    if isinstance(value, list | tuple):
        return CommentedSeq(_commented(item) for item in value)
    return value


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"The stored document cannot be edited: {problem}.",
        reason="INVALID_DOCUMENT",
        violations=[FieldViolation(_FIELD, problem)],
    )


class _Editor:
    """Loads one document, applies an edit to its round-trip model, writes it back."""

    def __init__(self, text: str) -> None:
        self.parts: DocumentParts = split_parts(text)
        self.text = text

    def apply(self, edit: Callable[[CommentedMap], None]) -> str:
        original = self.parts.yaml
        crlf = "\r\n" in original
        if crlf:
            original = original.replace("\r\n", "\n")
        missing_newline = original != "" and not original.endswith("\n")
        if missing_newline:
            original += "\n"

        self._check_hardened(original)
        yaml = _round_trip_yaml()
        try:
            root = yaml.load(original)
        except YAMLError as error:
            raise _invalid(f"YAML error: {error}") from None
        if root is None:
            root = CommentedMap()
        if not isinstance(root, CommentedMap):
            raise _invalid("the document is not a mapping")
        _guess_indentation(yaml, root, original)

        baseline = _dump(yaml, root)
        edit(root)
        edited = _dump(yaml, root)
        if edited == baseline:
            return self.text
        result = transplant(original, baseline, edited)
        if not _same_data(result, edited):
            # The line merge went wrong somewhere; a normalized but correct document wins.
            result = edited

        if missing_newline and result.endswith("\n"):
            result = result[:-1]
        if crlf:
            result = result.replace("\n", "\r\n")
        return self.parts.join(result)

    def _check_hardened(self, yaml_text: str) -> None:
        """The same limits as validation, before ruamel builds anything."""
        _, violations = load_yaml(yaml_text, Limits(), self.parts.line_offset)
        errors = [v for v in violations if v.severity is Severity.ERROR]
        if errors:
            raise InvalidArgument(
                "The stored document cannot be edited: it is not valid YAML.",
                reason="INVALID_DOCUMENT",
                violations=[
                    FieldViolation(
                        f"{_FIELD}.{v.field}" if v.field else _FIELD,
                        v.message,
                        line=v.line,
                        column=v.column,
                    )
                    for v in errors
                ],
            )


def _round_trip_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    # Never re-wrap long lines: that would rewrite lines the edit did not touch.
    yaml.width = 1 << 30
    return yaml


def _dump(yaml: YAML, root: Any) -> str:
    stream = io.StringIO()
    yaml.dump(root, stream)
    return stream.getvalue()


def _same_data(first: str, second: str) -> bool:
    loaded_first, _ = load_yaml(first, Limits())
    loaded_second, _ = load_yaml(second, Limits())
    if loaded_first is None or loaded_second is None:
        return False
    return bool(loaded_first.root == loaded_second.root)


# Indentation -----------------------------------------------------------------------------


def _guess_indentation(yaml: YAML, root: CommentedMap, text: str) -> None:
    """Makes ruamel indent the way the document does, judged from its first nested blocks."""
    lines = text.split("\n")
    mapping = _mapping_indent(root)
    sequence, offset = _sequence_indent(root, lines) or (mapping + 2, mapping)
    yaml.map_indent = mapping
    yaml.sequence_indent = sequence
    yaml.sequence_dash_offset = offset


def _mapping_indent(root: CommentedMap) -> int:
    for parent in _walk(root):
        if not isinstance(parent, CommentedMap) or parent.fa.flow_style():
            continue
        for key, value in parent.items():
            if not isinstance(value, CommentedMap) or not value or value.fa.flow_style():
                continue
            child = _key_position(value, next(iter(value)))
            own = _key_position(parent, key)
            if child is not None and own is not None and child[1] > own[1]:
                return child[1] - own[1]
    return 2


def _sequence_indent(root: CommentedMap, lines: Sequence[str]) -> tuple[int, int] | None:
    """(item column, dash column), both relative to the list's key."""
    # The lists an edit touches are top-level, so judge from those first.
    candidates = [
        (parent, key)
        for parent in _walk(root)
        if isinstance(parent, CommentedMap) and not parent.fa.flow_style()
        for key in parent
    ]
    candidates.sort(key=lambda pair: pair[0] is not root)
    for parent, key in candidates:
        value = parent[key]
        if not isinstance(value, CommentedSeq) or not value or value.fa.flow_style():
            continue
        own = _key_position(parent, key)
        if own is None:
            continue
        key_column = own[1]
        line, item_column = (int(n) for n in value.lc.item(0))
        if not 0 <= line < len(lines):
            continue
        dash = lines[line].rfind("-", 0, item_column)
        if dash < key_column:
            continue
        return item_column - key_column, dash - key_column
    return None


def _walk(root: Any) -> list[Any]:
    """Every collection in the document, breadth first (the loader already bounded it)."""
    found: list[Any] = []
    queue = deque([root])
    seen: set[int] = set()
    while queue:
        node = queue.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        found.append(node)
        children = node.values() if isinstance(node, Mapping) else node
        queue.extend(child for child in children if isinstance(child, CommentedMap | CommentedSeq))
    return found


def _key_position(mapping: CommentedMap, key: Any) -> tuple[int, int] | None:
    """Where `key` is written; None for keys that come from a `<<` merge."""
    try:
        line, column = mapping.lc.key(key)
    except (KeyError, TypeError):
        return None
    return int(line), int(column)


# Three-way line merge --------------------------------------------------------------------


@dataclass
class _Hunk:
    """Replace base lines [start, end) with `lines`."""

    start: int
    end: int
    lines: list[str]
    edited: bool


_BLOCK_SCALAR_HEADER = re.compile(r"(?:^|[\s:-])[|>][0-9+-]*\s*(?:#.*)?$")


def transplant(original: str, baseline: str, edited: str) -> str:
    """Applies the change from `baseline` to `edited` onto `original`.

    `baseline` and `edited` are ruamel dumps of the same model before and after the edit;
    `original` is the stored text `baseline` was loaded from. Where the edit and the
    original's own differences from `baseline` touch the same lines, the edit wins.
    """
    base = baseline.splitlines(keepends=True)
    ours = original.splitlines(keepends=True)
    theirs = edited.splitlines(keepends=True)
    loose = _loose_lines(base)
    edits = _settle(base, _hunks(base, theirs, edited=True), loose)
    kept = _hunks(base, ours, edited=False)
    return "".join(_merge(base, kept, edits))


def _hunks(base: list[str], other: list[str], *, edited: bool) -> list[_Hunk]:
    matcher = SequenceMatcher(None, base, other, autojunk=False)
    return [
        _Hunk(i1, i2, other[j1:j2], edited)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def _loose_lines(lines: list[str]) -> set[int]:
    """Indexes of blank and comment-only lines (not those inside block scalars)."""
    loose: set[int] = set()
    block_indent: int | None = None
    # Blank lines in a block scalar are content unless nothing of it follows them.
    blanks: list[int] = []
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        stripped = body.strip()
        indent = len(body) - len(body.lstrip(" "))
        if block_indent is not None:
            if not stripped:
                blanks.append(index)
                continue
            if indent > block_indent:
                blanks.clear()
                continue
            block_indent = None
            loose.update(blanks)
            blanks.clear()
        if not stripped or stripped.startswith("#"):
            loose.add(index)
        elif _BLOCK_SCALAR_HEADER.search(body):
            block_indent = indent
    loose.update(blanks)
    return loose


def _settle(base: list[str], hunks: list[_Hunk], loose: set[int]) -> list[_Hunk]:
    """Moves edit boundaries across blank and comment lines to where a person would put them.

    ruamel attaches the blank lines and comments that follow a node to that node, so an
    appended item lands after the blank line that separates its list from the next key, and
    a removed item takes along the comment that introduces the next one. Here an insert
    moves up above such lines, and a removal takes the lines that introduce the removed
    block rather than those that introduce the next. Comments indented deeper than the
    block stay with the block they are inside; a header comment at the very top of the
    document is never taken.
    """
    settled: list[_Hunk] = []
    for position, hunk in enumerate(hunks):
        floor = settled[-1].end if settled else 0
        ceiling = hunks[position + 1].start if position + 1 < len(hunks) else len(base)
        if hunk.start == hunk.end:
            hunk = _settle_insert(base, hunk, loose, floor)
        elif not hunk.lines:
            hunk = _settle_removal(base, hunk, loose, floor, ceiling)
        settled.append(hunk)
    return settled


def _settle_insert(base: list[str], hunk: _Hunk, loose: set[int], floor: int) -> _Hunk:
    indent = _indent(next((line for line in hunk.lines if line.strip()), ""))
    start = hunk.start
    while start > floor and start - 1 in loose and not _inside(base[start - 1], indent):
        start -= 1
    if start == 0:
        return hunk
    return _Hunk(start, start, hunk.lines, hunk.edited)


def _settle_removal(
    base: list[str], hunk: _Hunk, loose: set[int], floor: int, ceiling: int
) -> _Hunk:
    content = [index for index in range(hunk.start, hunk.end) if index not in loose]
    if not content:
        return hunk
    first = content[0]
    indent = _indent(base[first])
    # The blank and comment lines right above the block, which may introduce it.
    top = first
    while top > floor and top - 1 in loose and not _inside(base[top - 1], indent):
        top -= 1
    if top == 0:
        # A header comment at the very top of the document is never taken.
        top = first
    # Comments indented deeper than the block belong to it; the rest below is its tail.
    end = after = content[-1] + 1
    while after < ceiling and after in loose:
        after += 1
        if _inside(base[after - 1], indent):
            end = after
    if not _is_item(base[first], indent):
        return _settle_block_removal(base, first, top, end, after, indent)
    return _settle_item_removal(base, first, top, end, after, indent)


def _settle_block_removal(
    base: list[str], first: int, top: int, end: int, after: int, indent: int
) -> _Hunk:
    """A mapping key goes with the lines that introduce it."""
    separated = any(not base[index].strip() for index in range(top, first))
    if not separated and after < len(base) and _indent(base[after]) == indent:
        while end < after and not base[end].strip():
            end += 1
    return _Hunk(top, end, [], True)


def _settle_item_removal(
    base: list[str], first: int, top: int, end: int, after: int, indent: int
) -> _Hunk:
    """A list entry goes alone, or with its comment when the comment is its own.

    Entries with nothing between them form a group; a blank line or a comment starts a new
    one. A comment that heads a group stays while any entry of the group remains, so it
    goes only with an entry that is alone in its group. One blank line keeps separating
    the groups around a removed one.
    """
    followed = end == after and after < len(base) and _is_item(base[after], indent)
    above = base[first - 1] if first > 0 else ""
    after_sibling = (
        top == first
        and first > 0
        and (_indent(above) > indent or (_indent(above) == indent and _is_item(above, indent)))
    )
    if followed or after_sibling:
        # Not alone in its group: whatever introduces the group stays with it.
        return _Hunk(first, end, [], True)
    comments = first
    while comments > top and base[comments - 1].strip():
        comments -= 1
    blank_above = comments > top
    if blank_above:
        # One blank line keeps separating the groups on either side: the one above goes,
        # unless a comment right below starts the next group without one of its own.
        next_comment = end < after and bool(base[end].strip())
        return _Hunk(comments if next_comment else top, end, [], True)
    parent = base[comments - 1] if comments > 0 else ""
    if comments > 0 and (
        _indent(parent) < indent or (_indent(parent) == indent and not _is_item(parent, indent))
    ):
        # The first entry under its key: blank lines below it would now part the next
        # group from the key.
        while end < after and not base[end].strip():
            end += 1
    return _Hunk(comments, end, [], True)


def _is_item(line: str, indent: int) -> bool:
    """True for a list entry's first line at this indent."""
    return _indent(line) == indent and line.lstrip(" ").startswith("-")


def _inside(line: str, indent: int) -> bool:
    """A comment indented deeper than `indent` is part of the block above it."""
    return bool(line.strip()) and _indent(line) > indent


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _merge(base: list[str], kept: list[_Hunk], edits: list[_Hunk]) -> list[str]:
    # At one spot the edit goes first: lines only the original has there are ones ruamel
    # drops, such as a closing `...`, and they belong after it.
    hunks = sorted([*kept, *edits], key=lambda h: (h.start, h.end, not h.edited))
    out: list[str] = []
    position = 0
    index = 0
    while index < len(hunks):
        group = [hunks[index]]
        low, high = group[0].start, group[0].end
        index += 1
        while index < len(hunks) and _overlaps(low, high, hunks[index]):
            group.append(hunks[index])
            high = max(high, hunks[index].end)
            index += 1
        out.extend(base[position:low])
        sides = {hunk.edited for hunk in group}
        if len(sides) > 1 and not all(h.start == h.end == low for h in group):
            # Both sides changed these lines: the edit wins, ruamel's spelling included.
            group = [hunk for hunk in group if hunk.edited]
        cursor = low
        for hunk in group:
            out.extend(base[cursor : hunk.start])
            out.extend(hunk.lines)
            cursor = max(cursor, hunk.end)
        out.extend(base[cursor:high])
        position = high
    out.extend(base[position:])
    return out


def _overlaps(low: int, high: int, hunk: _Hunk) -> bool:
    if hunk.start < high:
        return True
    # Two inserts at the same place: both are kept, the edit's lines first.
    return low == high == hunk.start == hunk.end
