"""Validates a whole bundle document: size, characters, hardened YAML, schema, strings."""

from __future__ import annotations

import re
from typing import Any

from shared.bundle.document import split_document, split_parts
from shared.bundle.literal_secrets import is_literal_secret, key_format
from shared.bundle.loader import Locations, load_yaml
from shared.bundle.model import (
    BundleSummary,
    Limits,
    ParsedBundle,
    Severity,
    ValidationResult,
    Violation,
)
from shared.bundle.paths import Path, format_path
from shared.bundle.refs import reference_problems
from shared.bundle.schema import check_schema, key_text, summarize

__all__ = [
    "DEFAULT_LIMITS",
    "BundleSummary",
    "Limits",
    "ParsedBundle",
    "Severity",
    "ValidationResult",
    "Violation",
    "split_document",
    "validate_agent",
    "validate_context",
    "validate_document",
]

# Neither can be stored as UTF-8 text or safely handed to other tools.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


DEFAULT_LIMITS = Limits()


def validate_document(
    text: str, limits: Limits = DEFAULT_LIMITS, *, allow_literal_secrets: bool = False
) -> ValidationResult:
    """Checks a bundle document and summarizes it; never raises for a bad document.

    A literal secret is an error unless allowed (a tenant's opt-in), then a warning.
    """
    return _validate(text, limits, allow_literal_secrets, agent=False)


def validate_agent(
    text: str, limits: Limits = DEFAULT_LIMITS, *, allow_literal_secrets: bool = False
) -> ValidationResult:
    """Checks an agent file: YAML frontmatter with `meta.name` and `meta.description` (and
    any bundle sections), then the agent's markdown instruction. The summary's name and
    description are the agent's."""
    refused = _check_text(text, limits)
    if refused is not None:
        return refused
    if not split_parts(text).has_frontmatter:
        return _refused(
            Violation(
                "",
                1,
                1,
                "an agent file starts with YAML frontmatter between --- lines, holding "
                "meta.name and meta.description",
                Severity.ERROR,
            )
        )
    return _validate(text, limits, allow_literal_secrets, agent=True)


def validate_context(text: str, limits: Limits = DEFAULT_LIMITS) -> ValidationResult:
    """Checks a context file: any text within the size cap that can be stored (no NUL, no
    lone surrogate). Its content is never parsed."""
    refused = _check_text(text, limits)
    if refused is not None:
        return refused
    return ValidationResult((), BundleSummary(), None)


def _check_text(text: str, limits: Limits) -> ValidationResult | None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        message = f"the document is {size} bytes; the limit is {limits.max_bytes} bytes"
        return _refused(Violation("", 0, 0, message, Severity.ERROR))
    forbidden = _FORBIDDEN.search(text)
    if forbidden is not None:
        return _refused(_forbidden_character(text, forbidden.start()))
    return None


def _validate(
    text: str, limits: Limits, allow_literal_secrets: bool, *, agent: bool
) -> ValidationResult:
    refused = _check_text(text, limits)
    if refused is not None:
        return refused

    parts = split_parts(text)
    instruction = parts.body.strip() if parts.body is not None else ""
    loaded, violations = load_yaml(parts.yaml, limits, parts.line_offset)
    if loaded is None:
        summary = BundleSummary(has_instruction=bool(instruction))
        return ValidationResult(_ordered(violations), summary, None)

    root = loaded.root
    violations += check_schema(root, loaded.locations, agent=agent)
    secrets = Severity.WARNING if allow_literal_secrets else Severity.ERROR
    violations += _check_strings(root, loaded.locations, secrets)
    summary = summarize(root, loaded.locations, bool(instruction), agent=agent)
    bundle = None
    if root is None or isinstance(root, dict):
        bundle = ParsedBundle(root or {}, instruction, parts.has_frontmatter, loaded.locations)
    return ValidationResult(_ordered(violations), summary, bundle)


def _refused(violation: Violation) -> ValidationResult:
    return ValidationResult((violation,), BundleSummary(), None)


def _forbidden_character(text: str, offset: int) -> Violation:
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    character = text[offset]
    if character == "\x00":
        message = "NUL characters are not allowed"
    else:
        message = f"lone surrogate U+{ord(character):04X} is not valid Unicode"
    return Violation("", line, column, message, Severity.ERROR)


def _ordered(violations: list[Violation]) -> tuple[Violation, ...]:
    """Document order; the same finding reached twice through an alias is kept once."""
    unique = dict.fromkeys(violations)
    return tuple(sorted(unique, key=lambda v: (v.line, v.column)))


def _check_strings(root: Any, locations: Locations, secrets: Severity) -> list[Violation]:
    """`${...}` syntax and literal secrets, in every string of the document."""
    violations: list[Violation] = []
    # Iterative, and bounded by Limits.max_nodes: the loader counted aliases expanded.
    stack: list[tuple[Path, Any, str | None]] = [((), root, None)]
    while stack:
        path, value, key = stack.pop()
        if isinstance(value, dict):
            for child_key, child in value.items():
                text = key_text(child_key)
                child_path = (*path, text)
                if isinstance(child_key, str):
                    _check_references(child_key, child_path, locations.key(child_path), violations)
                stack.append((child_path, child, text))
        elif isinstance(value, list):
            stack.extend(((*path, index), item, None) for index, item in enumerate(value))
        elif isinstance(value, str):
            location = locations.value(path)
            _check_references(value, path, location, violations)
            _check_secret(key, value, path, location, secrets, violations)
    return violations


def _check_references(
    value: str, path: Path, location: tuple[int, int], violations: list[Violation]
) -> None:
    for problem in reference_problems(value):
        violations.append(Violation(format_path(path), *location, problem.message, Severity.ERROR))


def _check_secret(
    key: str | None,
    value: str,
    path: Path,
    location: tuple[int, int],
    severity: Severity,
    violations: list[Violation],
) -> None:
    # The messages never quote the value: the point is to keep the secret out of sight.
    if key is not None and is_literal_secret(key, value):
        message = "looks like a literal secret; use a ${VAR} reference"
    else:
        found = key_format(value)
        if found is None:
            return
        message = f"looks like {found} (a literal secret); use a ${{VAR}} reference"
    if severity is Severity.ERROR:
        message += " (literal secrets are not allowed for this tenant)"
    violations.append(Violation(format_path(path), *location, message, severity))
