"""Per-session overrides: a bundle fragment composed last over a session's prepared config.

The fragment has the shape of a bundle document's frontmatter: `session`, `providers`,
`tools`, `hooks`, `context`, `agents` and `spawn`, merged over the config by the rules of
includes (`compose.merge_bundles`), plus `remove`, Tandem's own form for taking module
entries out (Amplifier's composition only ever adds; its `spawn.exclude_tools` keeps tools
from spawned agents, not from the session itself):

    remove:
      tools: [tool-bash]        # by id, else module, as composition matches entries

Removals apply to the composed config before the fragment is merged, so a fragment may
remove an entry and declare it afresh. It has no instruction, no `bundle` header and no
`includes`: it is refused INVALID_ARGUMENT located under "overrides" for any of them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from session_service.prepare.compose import MODULE_LISTS, merge_bundles, module_key
from shared.bundle.loader import Locations
from shared.bundle.model import Limits
from shared.bundle.paths import Path, format_path
from shared.bundle.validate import validate_document
from shared.errors import FieldViolation, InvalidArgument, PreconditionViolation

FIELD = "overrides"
# The label of the fragment's layer in a composition, and the prefix of what it reports.
OVERRIDES_LABEL = "overrides"
MAX_OVERRIDES_BYTES = 64 * 1024
REMOVE = "remove"
ALLOWED_KEYS = ("session", *MODULE_LISTS, "context", "agents", "spawn", REMOVE)
_KIND = {"providers": "provider", "tools": "tool", "hooks": "hook"}


@dataclass(frozen=True)
class Overrides:
    """A parsed fragment: what it merges, what it removes, and the digest that keys it."""

    data: Mapping[str, Any]
    # List key ("tools") -> the module keys to take out, as written.
    removals: Mapping[str, tuple[str, ...]]
    # sha256 of the parsed fragment in a canonical form: formatting and comments do not
    # change it, so the same overrides written twice share one prepared bundle.
    digest: str
    locations: Locations | None = dataclasses.field(default=None, compare=False, repr=False)

    def where(self, path: Path) -> FieldViolation:
        """A violation skeleton located at path of the fragment (line and column)."""
        line, column = self.locations.value(path) if self.locations else (0, 0)
        return FieldViolation(_field(path), "", line, column)


@dataclass
class InvalidOverrides(InvalidArgument):
    """The overrides cannot be composed or do not validate; each violation is located."""

    reason: str = "INVALID_OVERRIDES"


def refused(violations: Sequence[FieldViolation]) -> InvalidOverrides:
    """INVALID_ARGUMENT naming the first problem; every one is listed."""
    first = violations[0]
    return InvalidOverrides(
        f"Invalid overrides: {first.field}: {first.description}",
        violations=list(violations),
    )


def parse_overrides(text: str, limits: Limits) -> Overrides | None:
    """The fragment in text, None when it holds nothing; InvalidOverrides when it is refused.

    It is loaded by the bundle parser, with its caps on depth, nodes and aliases, within
    MAX_OVERRIDES_BYTES, and checked by the bundle schema (bar the `bundle` header a
    fragment does not have) and the same string rules (`${VAR}` syntax, no literal secrets).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_OVERRIDES_BYTES:
        raise refused(
            [FieldViolation(FIELD, f"is {size} bytes; the limit is {MAX_OVERRIDES_BYTES} bytes")]
        )
    if not text.strip():
        return None
    result = validate_document(text, dataclasses.replace(limits, max_bytes=MAX_OVERRIDES_BYTES))
    violations = [
        FieldViolation(_field_text(v.field), v.message, v.line, v.column)
        for v in result.errors
        # A fragment has no header of its own: the config's is kept.
        if not (v.field == "bundle" or v.field.startswith("bundle."))
    ]
    bundle = result.bundle
    if bundle is not None and bundle.instruction:
        violations.append(
            FieldViolation(
                FIELD,
                "a fragment is YAML only (the frontmatter of a bundle document): "
                "it cannot carry or replace the instruction",
            )
        )
    if bundle is None or violations:
        raise refused(violations or [FieldViolation(FIELD, "cannot be read as YAML")])
    data = bundle.data
    locations = bundle.locations
    if not data:
        return None
    problems: list[FieldViolation] = []
    for key in data:
        if key == "includes":
            message = (
                "a fragment cannot include bundles; include them in the config, or name "
                "context files under context.include"
            )
        elif key == "bundle":
            message = "a fragment cannot rename the bundle; it keeps the config's header"
        elif key not in ALLOWED_KEYS:
            message = f"unknown key; a fragment may set {', '.join(ALLOWED_KEYS)}"
        else:
            continue
        problems.append(_at(locations, (str(key),), message))
    removals = _removals(data.get(REMOVE), locations, problems)
    if problems:
        raise refused(problems)
    merged = {k: v for k, v in data.items() if k != REMOVE}
    digest = hashlib.sha256(json.dumps(_canonical(data), separators=(",", ":")).encode())
    return Overrides(merged, removals, digest.hexdigest(), locations)


def apply_overrides(document: Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    """document with the removals applied, then the fragment merged over it.

    InvalidOverrides when a removal names an entry the document does not have: a removal
    that silently did nothing would leave a tool the caller believes gone.
    """
    kept = dict(copy.deepcopy(document))
    problems: list[FieldViolation] = []
    for list_key, names in overrides.removals.items():
        entries = [e for e in kept.get(list_key) or [] if isinstance(e, Mapping | str)]
        present = [_entry_names(e) for e in entries]
        for index, name in enumerate(names):
            if not any(name in found for found in present):
                have = sorted({module_key(e) if isinstance(e, Mapping) else e for e in entries})
                skeleton = overrides.where((REMOVE, list_key, index))
                problems.append(
                    dataclasses.replace(
                        skeleton,
                        description=f"the config has no {_KIND[list_key]} {name!r} to remove "
                        f"(it has: {', '.join(have) or 'none'})",
                    )
                )
        kept[list_key] = [
            e for e, found in zip(entries, present, strict=True) if not found & set(names)
        ]
    if problems:
        raise refused(problems)
    return merge_bundles(kept, overrides.data)


def fragment_violations(
    problems: Sequence[PreconditionViolation],
    overrides: Overrides,
    document: Mapping[str, Any],
) -> list[FieldViolation]:
    """The preparation problems that come from the fragment, located in it.

    document is the composed one the problems were found in. A problem is the fragment's
    when it is reported for the fragment's layer, or when the value it is about was written
    by the fragment (module entries matched by key, as composition merged them).
    """
    found: list[FieldViolation] = []
    for problem in problems:
        path = _fragment_path(problem.subject, overrides, document)
        if path is not None:
            skeleton = overrides.where(path)
            found.append(
                dataclasses.replace(skeleton, description=f"{problem.type}: {problem.description}")
            )
    return found


def _fragment_path(subject: str, overrides: Overrides, document: Mapping[str, Any]) -> Path | None:
    prefix = f"{OVERRIDES_LABEL}: "
    layer = subject.startswith(prefix)
    path = _parse_path(subject.removeprefix(prefix) if layer else subject)
    if path is None:
        return None
    if layer:
        # A module entry's own problem (not installed) is reported at its composed index.
        if len(path) == 2 and path[0] in MODULE_LISTS and isinstance(path[1], int):
            index = _fragment_index(overrides, document, str(path[0]), path[1])
            return None if index is None else (path[0], index, "module")
        if path[:1] == ("session",) and len(path) == 2:
            return (*path, "module") if isinstance(_get(overrides.data, path), Mapping) else path
        return path
    if len(path) >= 2 and path[0] in MODULE_LISTS and isinstance(path[1], int):
        index = _fragment_index(overrides, document, str(path[0]), path[1])
        if index is None:
            return None
        entry = overrides.data[str(path[0])][index]
        return (path[0], index, *path[2:]) if _written(entry, path[2:]) else None
    return path if _written(overrides.data, path) else None


def _fragment_index(
    overrides: Overrides, document: Mapping[str, Any], list_key: str, index: int
) -> int | None:
    """Where the fragment declares the entry at document[list_key][index], if it does."""
    entries = document.get(list_key)
    if not isinstance(entries, list) or index >= len(entries):
        return None
    composed = entries[index]
    key = module_key(composed) if isinstance(composed, Mapping) else str(composed)
    for position, entry in enumerate(overrides.data.get(list_key) or []):
        if isinstance(entry, Mapping) and module_key(entry) == key:
            return position
    return None


def _written(value: Any, path: Path) -> bool:
    """Whether the fragment wrote what path names: each mapping along it has the key; a
    list or scalar it reaches on the way was replaced whole by the fragment."""
    for part in path:
        if isinstance(value, Mapping):
            if part not in value:
                return False
            value = value[part]
        else:
            return isinstance(value, list)
    return True


def _get(value: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


_PART = re.compile(r'\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _parse_path(text: str) -> Path | None:
    """format_path read back: `tools[2].config` -> ("tools", 2, "config"); None otherwise."""
    parts: list[str | int] = []
    position = 0
    while position < len(text):
        match = _PART.match(text, position)
        if match is None or (match.group(0).startswith(".") and not parts):
            return None
        key, index, quoted = match.groups()
        if key is not None:
            parts.append(key)
        elif index is not None:
            parts.append(int(index))
        else:
            parts.append(json.loads(quoted))
        position = match.end()
    return tuple(parts) or None


def _removals(
    value: Any, locations: Locations | None, problems: list[FieldViolation]
) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(
            _at(locations, (REMOVE,), f"must map {', '.join(MODULE_LISTS)} to module lists")
        )
        return {}
    removals: dict[str, tuple[str, ...]] = {}
    for key, names in value.items():
        if key not in MODULE_LISTS:
            problems.append(
                _at(locations, (REMOVE, str(key)), f"can remove {', '.join(MODULE_LISTS)} only")
            )
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            problems.append(_at(locations, (REMOVE, key), "must list module names (or entry ids)"))
            continue
        removals[key] = tuple(names)
    return removals


def _entry_names(entry: Mapping[str, Any] | str) -> set[str]:
    if isinstance(entry, str):
        return {entry}
    return {str(entry[k]) for k in ("id", "module") if entry.get(k)}


def _canonical(value: Any) -> Any:
    """value as JSON that is equal exactly when the data is: keys sorted, types kept."""
    if isinstance(value, Mapping):
        items = [[_canonical(k), _canonical(v)] for k, v in value.items()]
        return {"m": sorted(items, key=lambda item: json.dumps(item[0]))}
    if isinstance(value, list):
        return {"l": [_canonical(v) for v in value]}
    # bool before int: YAML's true and 1 are different values.
    return {
        type(value).__name__: value
        if value is None or isinstance(value, bool | int | str)
        else repr(value)
    }


def _at(locations: Locations | None, path: Path, message: str) -> FieldViolation:
    line, column = locations.key(path) if locations else (0, 0)
    return FieldViolation(_field(path), message, line, column)


def _field(path: Path) -> str:
    return _field_text(format_path(path))


def _field_text(inner: str) -> str:
    if not inner:
        return FIELD
    return f"{FIELD}{inner}" if inner.startswith("[") else f"{FIELD}.{inner}"
