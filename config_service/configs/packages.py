"""Bundle packages: reading the files of an Amplifier-layout package into configs to store.

Pure and synchronous (the service runs it off the event loop): path rules, caps, the kind of
each file, its validation, its stored name, and the references it makes. Nothing here reads
the database; `ConfigService.import_bundle` compares the result with what is stored.

How a file's kind is decided (DESIGN §3 "Bundle packages"):

- `bundle.md` or `bundle.yaml` at the root is the root bundle (BUNDLE); its `bundle.name` is
  the package's namespace.
- `agents/NAME.md` (directly under `agents/`) is an AGENT file: frontmatter with `meta.name`
  and `meta.description`, then the agent's instruction.
- `behaviors/` and `providers/` hold bundles: every `.yaml`/`.yml` file there is a BUNDLE and
  is validated as one, so a broken behavior refuses the package instead of being stored as
  text.
- Any other `.yaml`/`.yml` file, and any `.md` file outside `agents/` (those two folders
  included), is a BUNDLE when it declares itself one (a top-level `bundle:` key; for markdown,
  in its frontmatter), else CONTEXT. So a README or a markdown file with other frontmatter
  stays context, and a bundle kept elsewhere (`bundles/web.yaml`) is still a bundle.
- Everything else (`context/**`, skills, docs, any other text) is CONTEXT: UTF-8 text within
  the per-file cap, stored as it is. Binary files are refused; leave them out of the package.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from config_service.configs.model import MAX_DESCRIPTION, ConfigKind
from shared.bundle.document import split_parts
from shared.bundle.loader import load_yaml
from shared.bundle.model import BundleSummary, Limits, Severity, ValidationResult, Violation
from shared.bundle.references import (
    MAX_NAME_LENGTH,
    ROOT_BUNDLE_PATHS,
    SHIPPED_NAMESPACE,
    Occurrence,
    body_mentions,
    document_references,
    is_valid_namespace,
    is_valid_path,
    stored_name,
)
from shared.bundle.validate import validate_agent, validate_context, validate_document
from shared.idempotency import fingerprint

KIB = 1024
MIB = 1024 * KIB
MAX_SOURCE_URI_LENGTH = 1024
_BUNDLE_FOLDERS = ("behaviors", "providers")
_YAML = (".yaml", ".yml")
_DRIVE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class PackageLimits:
    """Caps on one import: large enough for a big real package, small enough to refuse a
    hostile one before much work."""

    max_total_bytes: int = 8 * MIB
    max_file_bytes: int = 256 * KIB
    max_files: int = 2_000


@dataclass(frozen=True)
class IncomingFile:
    """One file as the client sent it: a path relative to the package root, and bytes."""

    path: str
    content: bytes


def package_fingerprint(files: Sequence[IncomingFile], source_uri: str) -> str:
    """What identifies an import request: its files (paths and contents, in the order sent,
    which is the order of the result) and its source_uri. A repeat of a request_id with any
    of them different is a reused id, not a retry."""
    canonical = {
        "files": [[item.path, hashlib.sha256(item.content).hexdigest()] for item in files],
        "source_uri": source_uri,
    }
    return fingerprint(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())


@dataclass(frozen=True)
class PackageFile:
    """One valid file of the package, ready to store as a config."""

    path: str
    name: str
    kind: ConfigKind
    text: str
    summary: BundleSummary
    description: str
    # References its YAML and markdown make (bundles and agents; none for context files).
    references: tuple[Occurrence, ...] = ()


@dataclass(frozen=True)
class Package:
    """What a package holds, and every problem found in it.

    `violations` are located by file: each `field` starts with the file's path
    (`behaviors/review.yaml: tools[0].config`), or is `files` for the package as a whole.
    `namespace` is "" when no valid root bundle names one.
    """

    namespace: str
    files: tuple[PackageFile, ...]
    violations: tuple[Violation, ...] = field(default=())

    @property
    def errors(self) -> tuple[Violation, ...]:
        """The ERROR violations: any one of them refuses the whole package."""
        return tuple(v for v in self.violations if v.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Violation, ...]:
        """The WARNING violations."""
        return tuple(v for v in self.violations if v.severity is Severity.WARNING)


def located(path: str, field: str) -> str:
    """A violation's field within a package: `behaviors/review.yaml: tools[0].config`."""
    return f"{path}: {field}" if field else path


def _error(field: str, message: str, line: int = 0, column: int = 0) -> Violation:
    return Violation(field, line, column, message, Severity.ERROR)


def normalize_path(raw: str) -> tuple[str, str]:
    """(normalized path, problem): `./a//b` → `a/b`; a problem ("" when none) for paths
    that are absolute, climb out with `..`, use backslashes or NUL, or hold characters a
    config name cannot."""
    if not raw:
        return "", "the path is empty"
    if "\x00" in raw:
        return "", "the path contains a NUL character"
    if "\\" in raw:
        return "", "the path contains a backslash; use / between folders"
    if raw.startswith("/") or _DRIVE.match(raw):
        return "", "the path is absolute; paths are relative to the package root"
    segments = [segment for segment in raw.split("/") if segment not in ("", ".")]
    if ".." in segments:
        return "", "the path contains '..'; paths stay inside the package"
    path = "/".join(segments)
    if not path:
        return "", "the path names no file"
    if not is_valid_path(path):
        return "", (
            "the path has characters a config name cannot hold: use letters, digits, "
            "'.', '_', '+' and '-' in each folder and file name"
        )
    return path, ""


def _decode(content: bytes) -> tuple[str | None, Violation | None]:
    try:
        return content.decode("utf-8"), None
    except UnicodeDecodeError as error:
        before = content[: error.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        message = (
            f"not UTF-8 text (invalid byte at offset {error.start}); a package holds text "
            "files only"
        )
        return None, _error("", message, line, column)


def _declares_bundle(yaml_text: str, limits: Limits, line_offset: int) -> bool:
    loaded, _ = load_yaml(yaml_text, limits, line_offset)
    return loaded is not None and isinstance(loaded.root, dict) and "bundle" in loaded.root


def classify(path: str, text: str, limits: Limits) -> ConfigKind:
    """The kind of the file at path (see the module docstring for the rules)."""
    if path in ROOT_BUNDLE_PATHS:
        return ConfigKind.BUNDLE
    folders, _, file_name = path.rpartition("/")
    if folders == "agents" and file_name.endswith(".md"):
        return ConfigKind.AGENT
    if path.endswith(_YAML):
        if folders.split("/")[0] in _BUNDLE_FOLDERS:
            return ConfigKind.BUNDLE
        return ConfigKind.BUNDLE if _declares_bundle(text, limits, 0) else ConfigKind.CONTEXT
    if path.endswith(".md"):
        parts = split_parts(text)
        if parts.has_frontmatter and _declares_bundle(parts.yaml, limits, parts.line_offset):
            return ConfigKind.BUNDLE
    return ConfigKind.CONTEXT


def _validate(
    kind: ConfigKind, text: str, limits: Limits, allow_literal_secrets: bool
) -> ValidationResult:
    if kind is ConfigKind.AGENT:
        return validate_agent(text, limits, allow_literal_secrets=allow_literal_secrets)
    if kind is ConfigKind.CONTEXT:
        return validate_context(text, limits)
    return validate_document(text, limits, allow_literal_secrets=allow_literal_secrets)


@dataclass
class _Checked:
    path: str
    kind: ConfigKind
    text: str
    result: ValidationResult


def read_package(
    files: Sequence[IncomingFile],
    limits: PackageLimits,
    *,
    allow_literal_secrets: bool = False,
    document_limits: Limits | None = None,
) -> Package:
    """Checks and classifies every file of a package; never raises for a bad package.

    The count and total size are checked first, so an oversized package costs nothing more.
    Each file's own violations are kept; a root bundle that is missing, doubled or nameless
    is a violation too. Files with errors are left out of `files`.
    """
    if len(files) > limits.max_files:
        message = f"the package has {len(files)} files; at most {limits.max_files} are allowed"
        return Package("", (), (_error("files", message),))
    total = sum(len(item.content) for item in files)
    if total > limits.max_total_bytes:
        message = (
            f"the package is {total} bytes; at most {limits.max_total_bytes} bytes are allowed"
        )
        return Package("", (), (_error("files", message),))
    doc_limits = document_limits or Limits()
    doc_limits = Limits(
        max_bytes=limits.max_file_bytes,
        max_depth=doc_limits.max_depth,
        max_nodes=doc_limits.max_nodes,
        max_aliases=doc_limits.max_aliases,
    )

    violations: list[Violation] = []
    checked: list[_Checked] = []
    seen: dict[str, str] = {}
    for item in files:
        path, problem = normalize_path(item.path)
        if problem:
            violations.append(_error(item.path or "files", problem))
            continue
        if path in seen:
            first = seen[path]
            violations.append(
                _error(item.path, f"the same file as {first!r}: each path may appear once")
            )
            continue
        seen[path] = item.path
        if len(item.content) > limits.max_file_bytes:
            message = (
                f"the file is {len(item.content)} bytes; at most {limits.max_file_bytes} "
                "bytes are allowed per file"
            )
            violations.append(_error(path, message))
            continue
        text, undecodable = _decode(item.content)
        if text is None:
            assert undecodable is not None
            violations.append(_relocate(path, undecodable))
            continue
        kind = classify(path, text, doc_limits)
        result = _validate(kind, text, doc_limits, allow_literal_secrets)
        violations.extend(_relocate(path, v) for v in result.violations)
        checked.append(_Checked(path, kind, text, result))

    namespace = _namespace(checked, violations)
    stored: list[PackageFile] = []
    names: dict[str, str] = {}
    for entry in checked:
        if not entry.result.valid or not namespace:
            continue
        document = entry.kind is not ConfigKind.CONTEXT
        name = stored_name(namespace, entry.path, document=document)
        if len(name) > MAX_NAME_LENGTH:
            violations.append(
                _error(entry.path, f"its config name would be over {MAX_NAME_LENGTH} characters")
            )
            continue
        if name in names:
            violations.append(
                _error(
                    entry.path,
                    f"is stored as {name!r}, like {names[name]!r}: rename one of them",
                )
            )
            continue
        names[name] = entry.path
        stored.append(
            PackageFile(
                path=entry.path,
                name=name,
                kind=entry.kind,
                text=entry.text,
                summary=entry.result.summary,
                description=entry.result.summary.description[:MAX_DESCRIPTION],
                references=_references(entry, namespace),
            )
        )
    ordered = sorted(violations, key=lambda v: (v.severity is not Severity.ERROR,))
    return Package(namespace, tuple(stored), tuple(ordered))


def _relocate(path: str, violation: Violation) -> Violation:
    return Violation(
        located(path, violation.field),
        violation.line,
        violation.column,
        violation.message,
        violation.severity,
    )


def _namespace(checked: Sequence[_Checked], violations: list[Violation]) -> str:
    roots = [entry for entry in checked if entry.path in ROOT_BUNDLE_PATHS]
    if not roots:
        if not any(v.field.startswith(ROOT_BUNDLE_PATHS) for v in violations):
            violations.append(
                _error(
                    "files",
                    "the package has no root bundle: bundle.md or bundle.yaml at its root, "
                    "whose bundle.name is the package's namespace",
                )
            )
        return ""
    if len(roots) > 1:
        violations.append(
            _error(roots[1].path, f"a second root bundle besides {roots[0].path!r}: keep one")
        )
        return ""
    root = roots[0]
    name = root.result.summary.name
    if not root.result.valid or not name:
        return ""
    line, column = _where(root.result, ("bundle", "name"))
    if not is_valid_namespace(name):
        violations.append(
            _error(
                located(root.path, "bundle.name"),
                "the package's namespace must be 1-128 characters of letters, digits, '.', "
                "'_' or '-', starting with a letter or digit",
                line,
                column,
            )
        )
        return ""
    if name == SHIPPED_NAMESPACE:
        violations.append(
            _error(
                located(root.path, "bundle.name"),
                f"the {SHIPPED_NAMESPACE!r} namespace is reserved for the bundles "
                "SessionService ships",
                line,
                column,
            )
        )
        return ""
    return name


def _where(result: ValidationResult, path: tuple[str, ...]) -> tuple[int, int]:
    bundle = result.bundle
    if bundle is None or bundle.locations is None:
        return 0, 0
    return bundle.locations.value(path)


def _references(entry: _Checked, namespace: str) -> tuple[Occurrence, ...]:
    bundle = entry.result.bundle
    if entry.kind is ConfigKind.CONTEXT or bundle is None:
        return ()
    locate = bundle.locations.value if bundle.locations is not None else None
    return (
        *document_references(bundle.data, namespace, locate),
        *body_mentions(entry.text),
    )
