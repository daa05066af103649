"""Composition of a bundle with its includes, by the Amplifier rules.

Includes are composed in the order listed and the including bundle comes last and wins;
`session` and `spawn` are deep-merged; `providers`, `tools` and `hooks` are merged entry by
entry, keyed by `id` or else `module` (the later entry's config deep-merged over the earlier
one's); `agents` are merged by agent name (later wins) while `agents.include` lists
accumulate; `context.include` lists accumulate in order without duplicates; the instruction
is replaced whole; any other key is replaced whole by the later bundle.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

DEEP_MERGED = ("session", "spawn")
MODULE_LISTS = ("providers", "tools", "hooks")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """base with override on top; mappings merge recursively, anything else is replaced."""
    merged = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def module_key(entry: Mapping[str, Any]) -> str:
    """What identifies a module entry across bundles."""
    return str(entry.get("id") or entry.get("module") or "")


def merge_modules(
    base: Sequence[Mapping[str, Any]], override: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Entries of override replace (deep-merged) those of base with the same key, else append."""
    merged = [dict(copy.deepcopy(entry)) for entry in base]
    positions = {module_key(entry): index for index, entry in enumerate(merged)}
    for entry in override:
        key = module_key(entry)
        if key in positions:
            merged[positions[key]] = deep_merge(merged[positions[key]], entry)
        else:
            positions[key] = len(merged)
            merged.append(dict(copy.deepcopy(entry)))
    return merged


def accumulate(base: Any, override: Any) -> list[Any]:
    """base's items then override's, in order, each once."""
    merged: list[Any] = []
    for item in [
        *(base if isinstance(base, list) else []),
        *(override if isinstance(override, list) else []),
    ]:
        if item not in merged:
            merged.append(copy.deepcopy(item))
    return merged


def merge_agents(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Agents by name, the later definition winning whole; `include` lists accumulate."""
    merged = {k: copy.deepcopy(v) for k, v in base.items()}
    for name, value in override.items():
        if name == "include":
            merged["include"] = accumulate(merged.get("include"), value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def merge_context(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`include` lists accumulate in order, each once; other keys as a deep merge."""
    merged = deep_merge(
        {k: v for k, v in base.items() if k != "include"},
        {k: v for k, v in override.items() if k != "include"},
    )
    if "include" in base or "include" in override:
        merged["include"] = accumulate(base.get("include"), override.get("include"))
    return merged


_SECTION_MERGES = {"agents": merge_agents, "context": merge_context}


def merge_bundles(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """One composition step: override is the later (including) bundle."""
    merged = {k: copy.deepcopy(v) for k, v in base.items() if k != "includes"}
    for key, value in override.items():
        if key == "includes":
            continue
        if (
            key in DEEP_MERGED
            and isinstance(value, Mapping)
            and isinstance(merged.get(key), Mapping)
        ):
            merged[key] = deep_merge(merged[key], value)
        elif key in MODULE_LISTS and isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merge_modules(merged[key], value)
        elif (
            key in _SECTION_MERGES
            and isinstance(value, Mapping)
            and isinstance(merged.get(key), Mapping)
        ):
            merged[key] = _SECTION_MERGES[key](merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def include_ref(item: Any) -> str:
    """The bundle an `includes` entry names (a string, or `{bundle: ref}`)."""
    if isinstance(item, Mapping):
        return str(item.get("bundle", ""))
    return str(item)
