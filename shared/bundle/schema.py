"""The Amplifier bundle schema: which keys a bundle has and what each must hold.

Missing values are reported at the key that should hold them, wrong values at their key,
list items at the item. Unknown keys are WARNINGs so that newer bundles still load.
"""

from __future__ import annotations

from typing import Any

from shared.bundle.loader import Locations
from shared.bundle.model import BundleSummary, Severity, Violation
from shared.bundle.paths import Path, format_path

MODULE_LISTS = ("providers", "tools", "hooks")
TOP_LEVEL_KEYS = frozenset(
    ("bundle", "includes", "session", *MODULE_LISTS, "context", "agents", "spawn")
)
_MODULE_ENTRY_KEYS = frozenset(("module", "source", "config", "id"))
_SESSION_MODULE_KEYS = frozenset(("module", "source", "config"))
_SESSION_MODULES = ("orchestrator", "context")
# An agent file's frontmatter: a bundle's sections, with `meta` in place of `bundle`.
AGENT_TOP_LEVEL_KEYS = TOP_LEVEL_KEYS | {"meta"}


def check_schema(root: Any, locations: Locations, *, agent: bool = False) -> list[Violation]:
    """Every schema violation in a loaded document, located.

    An agent file's frontmatter (`agent`) needs `meta.name` and `meta.description` instead
    of `bundle`; its other sections follow the bundle rules.
    """
    checker = _Checker(locations, agent=agent)
    checker.check(root)
    return checker.violations


def summarize(
    root: Any, locations: Locations, has_instruction: bool, *, agent: bool = False
) -> BundleSummary:
    """What the document declares, taking whatever is well-formed and skipping the rest.

    For an agent file, the name and description are its `meta`'s.
    """
    if not isinstance(root, dict):
        return BundleSummary(has_instruction=has_instruction)
    bundle = _mapping(root.get("meta" if agent else "bundle"))
    session = _mapping(root.get("session"))
    return BundleSummary(
        name=_string(bundle.get("name")),
        version=_version_text(bundle.get("version"), locations),
        description=_string(bundle.get("description")),
        providers=_modules(root.get("providers")),
        tools=_modules(root.get("tools")),
        hooks=_modules(root.get("hooks")),
        includes=_includes(root.get("includes")),
        orchestrator=_module_name(session.get("orchestrator")),
        context=_module_name(session.get("context")),
        has_instruction=has_instruction,
    )


def describe(value: Any) -> str:
    """A YAML-ish name for the type of `value`, for messages."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def key_text(key: Any) -> str:
    """A mapping key as it appears in a path."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


class _Checker:
    def __init__(self, locations: Locations, *, agent: bool = False) -> None:
        self.locations = locations
        self.agent = agent
        self.violations: list[Violation] = []

    def check(self, root: Any) -> None:
        if root is None:
            self._at_key(("meta",) if self.agent else ("bundle",), self._header_required())
            return
        if not isinstance(root, dict):
            line, column = self.locations.value(())
            message = f"the document must be a mapping, not {describe(root)}"
            self.violations.append(Violation("", line, column, message, Severity.ERROR))
            return
        known = AGENT_TOP_LEVEL_KEYS if self.agent else TOP_LEVEL_KEYS
        for key in root:
            if key_text(key) not in known:
                self._at_key(
                    (key_text(key),), f"unknown top-level key {key_text(key)!r}", Severity.WARNING
                )
        if self.agent:
            self._meta(root)
        else:
            self._bundle(root)
        if "includes" in root:
            self._includes(root["includes"])
        if "session" in root:
            self._session(root["session"])
        for kind in MODULE_LISTS:
            if kind in root:
                self._module_list(kind, root[kind])
        self._expect(("context",), root, dict, "a mapping")
        self._expect(("agents",), root, dict | list, "a mapping or a list")
        self._expect(("spawn",), root, dict, "a mapping")

    # Sections ----------------------------------------------------------------------------

    def _header_required(self) -> str:
        if self.agent:
            return (
                "meta is required: an agent file names itself with meta.name and meta.description"
            )
        return "bundle is required"

    def _meta(self, root: dict[Any, Any]) -> None:
        if "bundle" in root:
            self._at_key(
                ("bundle",),
                "an agent file names itself with meta, not bundle; bundle is ignored",
                Severity.WARNING,
            )
        if "meta" not in root:
            self._at_key(("meta",), self._header_required())
            return
        meta = root["meta"]
        if not isinstance(meta, dict):
            self._at_key(("meta",), f"meta must be a mapping, not {describe(meta)}")
            return
        for key in ("name", "description"):
            if key not in meta:
                self._at_key(("meta",), f"meta.{key} is required", field=("meta", key))
            else:
                self._non_empty_string(("meta", key), meta[key])

    def _bundle(self, root: dict[Any, Any]) -> None:
        if "bundle" not in root:
            self._at_key(("bundle",), "bundle is required")
            return
        bundle = root["bundle"]
        if not isinstance(bundle, dict):
            self._at_key(("bundle",), f"bundle must be a mapping, not {describe(bundle)}")
            return
        if "name" not in bundle:
            self._at_key(("bundle",), "bundle.name is required", field=("bundle", "name"))
        else:
            self._non_empty_string(("bundle", "name"), bundle["name"])
        if "version" in bundle:
            version = bundle["version"]
            if isinstance(version, bool) or not isinstance(version, str | int | float):
                self._at_key(
                    ("bundle", "version"),
                    f"must be a string or a number, not {describe(version)}",
                )
        self._expect(("bundle", "description"), bundle, str, "a string")

    def _includes(self, includes: Any) -> None:
        path: Path = ("includes",)
        if not isinstance(includes, list):
            self._at_key(path, f"includes must be a list, not {describe(includes)}")
            return
        for index, item in enumerate(includes):
            item_path = (*path, index)
            if isinstance(item, str):
                if not item.strip():
                    self._at_value(item_path, "an include must not be empty")
            elif isinstance(item, dict):
                if "bundle" not in item:
                    self._at_value(item_path, "bundle is required", field=(*item_path, "bundle"))
                else:
                    self._non_empty_string((*item_path, "bundle"), item["bundle"])
            else:
                self._at_value(
                    item_path,
                    "an include must be a bundle reference or a mapping with a bundle key,"
                    f" not {describe(item)}",
                )

    def _session(self, session: Any) -> None:
        if not isinstance(session, dict):
            self._at_key(("session",), f"session must be a mapping, not {describe(session)}")
            return
        for key in _SESSION_MODULES:
            if key not in session:
                continue
            path: Path = ("session", key)
            value = session[key]
            if isinstance(value, str):
                self._non_empty_string(path, value)
            elif isinstance(value, dict) and "module" not in value and set(value) <= {"config"}:
                # Config alone tunes the module an included bundle chose (Amplifier
                # behaviors do: `orchestrator: {config: {max_iterations: 4}}`); composition
                # deep-merges it, and preparation requires a module in the result.
                self._expect((*path, "config"), value, dict, "a mapping")
            elif isinstance(value, dict):
                self._module_entry(path, value, _SESSION_MODULE_KEYS)
            else:
                self._at_key(
                    path, f"must be a module name or a mapping with a module, not {describe(value)}"
                )

    def _module_list(self, kind: str, entries: Any) -> None:
        if not isinstance(entries, list):
            self._at_key((kind,), f"{kind} must be a list, not {describe(entries)}")
            return
        seen: dict[tuple[str, str], int] = {}
        for index, entry in enumerate(entries):
            path: Path = (kind, index)
            if not isinstance(entry, dict):
                self._at_value(path, f"a module entry must be a mapping, not {describe(entry)}")
                continue
            self._module_entry(path, entry, _MODULE_ENTRY_KEYS)
            identity = _identity(entry)
            if identity is None:
                continue
            first = seen.setdefault(identity, index)
            if first != index:
                what, name = identity
                self._at_value(
                    path,
                    f"duplicate entry: same {what} {name!r} as {kind}[{first}]",
                    Severity.WARNING,
                )

    def _module_entry(self, path: Path, entry: dict[Any, Any], allowed: frozenset[str]) -> None:
        if "module" not in entry:
            self._at_value(path, "module is required", field=(*path, "module"))
        else:
            self._non_empty_string((*path, "module"), entry["module"])
        self._expect((*path, "source"), entry, str, "a string")
        self._expect((*path, "config"), entry, dict, "a mapping")
        if "id" in allowed:
            self._expect((*path, "id"), entry, str, "a string")
        for key in entry:
            if key_text(key) not in allowed:
                self._at_key(
                    (*path, key_text(key)), f"unknown key {key_text(key)!r}", Severity.WARNING
                )

    # Helpers -----------------------------------------------------------------------------

    def _expect(self, path: Path, parent: dict[Any, Any], kind: type | Any, wanted: str) -> None:
        key = path[-1]
        if key in parent and not isinstance(parent[key], kind):
            self._at_key(path, f"must be {wanted}, not {describe(parent[key])}")

    def _non_empty_string(self, path: Path, value: Any) -> None:
        if not isinstance(value, str):
            self._at_key(path, f"must be a string, not {describe(value)}")
        elif not value.strip():
            self._at_key(path, "must not be empty")

    def _at_key(
        self,
        path: Path,
        message: str,
        severity: Severity = Severity.ERROR,
        field: Path | None = None,
    ) -> None:
        line, column = self.locations.key(path)
        self._add(field or path, line, column, message, severity)

    def _at_value(
        self,
        path: Path,
        message: str,
        severity: Severity = Severity.ERROR,
        field: Path | None = None,
    ) -> None:
        line, column = self.locations.value(path)
        self._add(field or path, line, column, message, severity)

    def _add(self, path: Path, line: int, column: int, message: str, severity: Severity) -> None:
        self.violations.append(Violation(format_path(path), line, column, message, severity))


def _identity(entry: dict[Any, Any]) -> tuple[str, str] | None:
    entry_id = entry.get("id")
    if isinstance(entry_id, str) and entry_id:
        return "id", entry_id
    module = entry.get("module")
    if isinstance(module, str) and module:
        return "module", module
    return None


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _version_text(value: Any, locations: Locations) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        # As written: `1.10` must not become "1.1".
        return locations.text(("bundle", "version")) or str(value)
    return ""


def _modules(entries: Any) -> tuple[str, ...]:
    if not isinstance(entries, list):
        return ()
    return tuple(
        entry["module"]
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("module"), str) and entry["module"]
    )


def _includes(includes: Any) -> tuple[str, ...]:
    if not isinstance(includes, list):
        return ()
    found: list[str] = []
    for item in includes:
        reference = item.get("bundle") if isinstance(item, dict) else item
        if isinstance(reference, str) and reference:
            found.append(reference)
    return tuple(found)


def _module_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _string(value.get("module"))
    return ""
