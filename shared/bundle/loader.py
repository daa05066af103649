"""Hardened YAML loading: one pass over the event stream that enforces limits while composing.

Nothing is constructed from tags: only standard core-schema tags are accepted, and the
result is plain data (dict, list, str, int, float, bool, None). The event stream comes from
ruamel.yaml's pure-Python parser, which is iterative, so a deep document cannot exhaust the
stack. Aliases are counted by the size of the subtree they stand for, so a "billion laughs"
document is refused after a few thousand events, long before anything large exists.
Aliased values are shared, never copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
)
from ruamel.yaml.reader import ReaderError

from shared.bundle.model import Limits, Severity, Violation
from shared.bundle.paths import Path, format_path
from shared.bundle.scalars import (
    MAPPING_TAGS,
    MERGE_KEY,
    MERGE_TAG,
    SCALAR_TAGS,
    SEQUENCE_TAGS,
    STANDARD_TAGS,
    ScalarError,
    resolve_plain,
    resolve_tagged,
    short_tag,
)

Location = tuple[int, int]


class Locations:
    """Where each key and value of a loaded document starts (1-based, whole document)."""

    def __init__(self, line_offset: int) -> None:
        self.line_offset = line_offset
        self._keys: dict[Path, Location] = {}
        self._values: dict[Path, Location] = {}
        self._texts: dict[Path, str] = {}

    # The first record of a path wins: a duplicate key must not move where the value in
    # force (the first) is reported.
    def record_key(self, path: Path, mark: Any) -> None:
        self._keys.setdefault(path, self.of_mark(mark))

    def record_value(self, path: Path, mark: Any) -> None:
        self._values.setdefault(path, self.of_mark(mark))

    def record_text(self, path: Path, text: str) -> None:
        self._texts.setdefault(path, text)

    def of_mark(self, mark: Any) -> Location:
        """A ruamel mark (0-based, within the YAML) as a 1-based document position."""
        return int(mark.line) + 1 + self.line_offset, int(mark.column) + 1

    def key(self, path: Path) -> Location:
        """Where the key of `path` is, else its value, else the nearest located ancestor."""
        while path:
            found = self._keys.get(path) or self._values.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self._values.get((), (self.line_offset + 1, 1))

    def value(self, path: Path) -> Location:
        """Where the value of `path` starts, else as `key`."""
        return self._values.get(path) or self.key(path)

    def text(self, path: Path) -> str | None:
        """The source text of a plain scalar that resolved to a number, as written."""
        return self._texts.get(path)


@dataclass(frozen=True)
class LoadedYaml:
    """Plain data of one YAML document and where its parts are."""

    root: Any
    locations: Locations


class _Fatal(Exception):
    """Stops the scan: what follows cannot be trusted or would be too costly."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(violation.message)
        self.violation = violation


@dataclass
class _Anchor:
    value: Any
    size: int
    height: int


@dataclass(frozen=True)
class _Key:
    value: Any
    text: str
    merge: bool
    # A repeated key is reported, and its value dropped: the first one stays in force.
    duplicate: bool


@dataclass
class _Frame:
    """A collection being composed."""

    path: Path
    container: dict[Any, Any] | list[Any]
    anchor: str | None
    size: int = 1
    height: int = 1
    # Mapping state: the key waiting for its value, keys seen so far, `<<` sources.
    pending: _Key | None = None
    seen: dict[Any, Location] = field(default_factory=dict)
    merges: list[tuple[Any, Path]] = field(default_factory=list)


def load_yaml(
    text: str, limits: Limits, line_offset: int = 0
) -> tuple[LoadedYaml | None, list[Violation]]:
    """Loads one YAML document as plain data within `limits`.

    Returns (LoadedYaml or None, violations). None means the document could not be composed
    (syntax error, a limit, several documents); with non-fatal errors (a disallowed tag, a
    duplicate key) the data is still returned so a summary can be made.
    """
    composer = _Composer(limits, line_offset)
    try:
        composer.run(YAML(typ="safe", pure=True).parse(text))
    except _Fatal as fatal:
        return None, [*composer.violations, fatal.violation]
    except MarkedYAMLError as error:
        return None, [_syntax_violation(error, composer.locations)]
    except ReaderError as error:
        line, column = _offset_location(text, int(error.position), line_offset)
        message = f"unacceptable character #x{int(error.character):04x}: {error.reason}"
        return None, [Violation("", line, column, message, Severity.ERROR)]
    except YAMLError as error:
        return None, [Violation("", 0, 0, f"YAML error: {error}", Severity.ERROR)]
    return LoadedYaml(composer.root, composer.locations), composer.violations


def _syntax_violation(error: MarkedYAMLError, locations: Locations) -> Violation:
    mark = error.problem_mark or error.context_mark
    line, column = locations.of_mark(mark) if mark is not None else (0, 0)
    parts = [str(p) for p in (error.context, error.problem) if p]
    message = "YAML syntax error: " + (": ".join(parts) or "invalid YAML")
    return Violation("", line, column, message, Severity.ERROR)


def _offset_location(text: str, offset: int, line_offset: int) -> Location:
    before = text[:offset]
    return before.count("\n") + 1 + line_offset, offset - (before.rfind("\n") + 1) + 1


class _Composer:
    def __init__(self, limits: Limits, line_offset: int) -> None:
        self.limits = limits
        self.locations = Locations(line_offset)
        self.violations: list[Violation] = []
        self.root: Any = None
        self._stack: list[_Frame] = []
        self._anchors: dict[str, _Anchor] = {}
        self._open_anchors: set[str] = set()
        self._nodes = 0
        self._aliases = 0
        self._documents = 0

    def run(self, events: Iterator[Event]) -> None:
        for event in events:
            if isinstance(event, ScalarEvent):
                self._scalar(event)
            elif isinstance(event, CollectionStartEvent):
                self._start(event)
            elif isinstance(event, MappingEndEvent | SequenceEndEvent):
                self._end()
            elif isinstance(event, AliasEvent):
                self._alias(event)
            elif isinstance(event, DocumentStartEvent):
                self._documents += 1
                if self._documents > 1:
                    self._fatal((), event.start_mark, "only one YAML document is allowed")

    # Events ------------------------------------------------------------------------------

    def _scalar(self, event: ScalarEvent) -> None:
        self._count(1, event)
        path = self._child_path(event)
        tag = self._check_tag(event, path, SCALAR_TAGS, "a scalar")
        text = str(event.value)
        value: Any
        if tag is None:
            plain = bool(event.implicit[0])
            value = resolve_plain(text) if plain else text
            if plain and path is not None and isinstance(value, int | float):
                self.locations.record_text(path, text)
        else:
            try:
                value = resolve_tagged(text, tag)
            except ScalarError as error:
                self._error(path or self._parent_path(), event.start_mark, str(error))
                value = text
        name = self._anchor_name(event)
        if name is not None:
            self._anchors[name] = _Anchor(value, 1, 0)
        is_merge = tag == MERGE_TAG or (tag is None and event.implicit[0] and text == MERGE_KEY)
        self._add(value, 1, 0, event=event, key_text=text, is_merge=is_merge)

    def _start(self, event: CollectionStartEvent) -> None:
        self._count(1, event)
        if len(self._stack) >= self.limits.max_depth:
            self._fatal(
                self._parent_path(),
                event.start_mark,
                f"nesting is deeper than {self.limits.max_depth} levels",
            )
        path = self._child_path(event)
        if path is None:
            self._fatal(self._parent_path(), event.start_mark, "mapping keys must be scalars")
        if isinstance(event, MappingStartEvent):
            self._check_tag(event, path, MAPPING_TAGS, "a mapping")
            container: dict[Any, Any] | list[Any] = {}
        else:
            self._check_tag(event, path, SEQUENCE_TAGS, "a sequence")
            container = []
        anchor = self._anchor_name(event)
        if anchor is not None:
            self._open_anchors.add(anchor)
        self._stack.append(_Frame(path, container, anchor))

    def _end(self) -> None:
        frame = self._stack.pop()
        if frame.merges:
            self._apply_merges(frame)
        if frame.anchor is not None:
            self._open_anchors.discard(frame.anchor)
            self._anchors[frame.anchor] = _Anchor(frame.container, frame.size, frame.height)
        self._add(frame.container, frame.size, frame.height, event=None, key_text="")

    def _alias(self, event: AliasEvent) -> None:
        self._aliases += 1
        parent = self._parent_path()
        if self._aliases > self.limits.max_aliases:
            self._fatal(parent, event.start_mark, f"more than {self.limits.max_aliases} aliases")
        name = str(event.anchor)
        if name in self._open_anchors:
            self._fatal(parent, event.start_mark, f"alias *{name} refers to its own anchor")
        anchor = self._anchors.get(name)
        if anchor is None:
            self._fatal(parent, event.start_mark, f"alias *{name} has no anchor")
        self._count(anchor.size, event)
        if len(self._stack) + anchor.height > self.limits.max_depth:
            self._fatal(
                parent,
                event.start_mark,
                f"nesting is deeper than {self.limits.max_depth} levels once aliases are expanded",
            )
        path = self._child_path(event)
        if path is None and isinstance(anchor.value, dict | list):
            self._fatal(parent, event.start_mark, "mapping keys must be scalars")
        self._add(anchor.value, anchor.size, anchor.height, event=event, key_text=str(anchor.value))

    # Composition -------------------------------------------------------------------------

    def _add(
        self,
        value: Any,
        size: int,
        height: int,
        *,
        event: Event | None,
        key_text: str,
        is_merge: bool = False,
    ) -> None:
        """Puts a finished node into its parent: a list item, a key, or a key's value."""
        if not self._stack:
            self.root = value
            return
        parent = self._stack[-1]
        parent.size += size
        parent.height = max(parent.height, height + 1)
        if isinstance(parent.container, list):
            parent.container.append(value)
        elif parent.pending is None:
            # Collections never get here as keys: _start refuses them.
            assert event is not None
            self._take_key(parent, value, key_text, is_merge, event)
        else:
            key = parent.pending
            parent.pending = None
            if key.merge:
                parent.merges.append((value, (*parent.path, key.text)))
            elif not key.duplicate:
                parent.container[key.value] = value

    def _take_key(
        self, parent: _Frame, key: Any, key_text: str, is_merge: bool, event: Event
    ) -> None:
        text = key if isinstance(key, str) else key_text
        path = (*parent.path, text)
        self.locations.record_key(path, event.start_mark)
        location = self.locations.of_mark(event.start_mark)
        first = None if is_merge else parent.seen.get(key)
        if first is not None:
            self.violations.append(
                Violation(
                    format_path(path),
                    *location,
                    f"duplicate key {text!r} (first defined on line {first[0]})",
                    Severity.ERROR,
                )
            )
        elif not is_merge:
            parent.seen[key] = location
        parent.pending = _Key(key, text, is_merge, duplicate=first is not None)

    def _apply_merges(self, frame: _Frame) -> None:
        target = frame.container
        if not isinstance(target, dict):
            return
        merged: dict[Any, Any] = {}
        for source, path in frame.merges:
            sources = source if isinstance(source, list) else [source]
            if not all(isinstance(s, dict) for s in sources):
                line, column = self.locations.key(path)
                self.violations.append(
                    Violation(
                        format_path(path),
                        line,
                        column,
                        "a merge (<<) needs a mapping or a list of mappings",
                        Severity.ERROR,
                    )
                )
                continue
            for mapping in sources:
                for key, value in mapping.items():
                    if key not in target and key not in merged:
                        merged[key] = value
        target.update(merged)

    def _child_path(self, event: Event) -> Path | None:
        """The path of the node `event` starts; None when that node is a mapping key."""
        if not self._stack:
            path: Path = ()
        else:
            parent = self._stack[-1]
            if isinstance(parent.container, list):
                path = (*parent.path, len(parent.container))
            elif parent.pending is None:
                return None
            else:
                path = (*parent.path, parent.pending.text)
        self.locations.record_value(path, event.start_mark)
        return path

    def _parent_path(self) -> Path:
        return self._stack[-1].path if self._stack else ()

    # Checks ------------------------------------------------------------------------------

    def _count(self, size: int, event: Event) -> None:
        self._nodes += size
        if self._nodes > self.limits.max_nodes:
            self._fatal(
                self._parent_path(),
                event.start_mark,
                f"the document has more than {self.limits.max_nodes} nodes"
                " once aliases are expanded",
            )

    def _check_tag(
        self, event: Any, path: Path | None, allowed: frozenset[str], kind: str
    ) -> str | None:
        if event.tag is None:
            return None
        tag = str(event.tag)
        if path is None:
            path = self._parent_path()
        if tag not in STANDARD_TAGS:
            self._error(
                path,
                event.start_mark,
                f"tag {short_tag(tag)} is not allowed: only standard YAML tags are accepted",
            )
            return None
        if tag not in allowed:
            self._error(path, event.start_mark, f"tag {short_tag(tag)} cannot be used on {kind}")
            return None
        return tag

    def _anchor_name(self, event: Any) -> str | None:
        anchor = event.anchor
        if anchor is None:
            return None
        name = str(anchor)
        if name in self._anchors or name in self._open_anchors:
            self._fatal(self._parent_path(), event.start_mark, f"anchor &{name} is defined twice")
        return name

    def _error(self, path: Path, mark: Any, message: str) -> None:
        line, column = self.locations.of_mark(mark)
        self.violations.append(Violation(format_path(path), line, column, message, Severity.ERROR))

    def _fatal(self, path: Path, mark: Any, message: str) -> NoReturn:
        line, column = self.locations.of_mark(mark)
        raise _Fatal(Violation(format_path(path), line, column, message, Severity.ERROR))
