"""`${VAR}` and `${VAR:default}` references inside bundle strings.

ConfigService only checks their syntax; SessionService expands them with `substitute` when it
prepares a session. There is no escape: every `${` must start a valid reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>[^}]*))?\}")
_OPEN = "${"


@dataclass(frozen=True)
class EnvReference:
    """One well-formed reference; `start`/`end` are its span in the string."""

    name: str
    default: str | None
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class ReferenceProblem:
    """A `${` at `offset` that does not start a valid reference."""

    offset: int
    message: str


class MalformedReference(ValueError):
    """Raised by `find_references` for the first malformed reference."""

    def __init__(self, problem: ReferenceProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def scan_references(value: str) -> tuple[list[EnvReference], list[ReferenceProblem]]:
    """Every reference in `value` and every `${` that is not one, in order."""
    references: list[EnvReference] = []
    problems: list[ReferenceProblem] = []
    position = value.find(_OPEN)
    while position != -1:
        match = _REFERENCE.match(value, position)
        if match is not None:
            references.append(
                EnvReference(match["name"], match["default"], match.start(), match.end())
            )
            position = value.find(_OPEN, match.end())
            continue
        problems.append(ReferenceProblem(position, _describe(value, position)))
        position = value.find(_OPEN, position + len(_OPEN))
    return references, problems


def find_references(value: str) -> list[EnvReference]:
    """The references in `value`; MalformedReference if any `${` is not a valid one."""
    references, problems = scan_references(value)
    if problems:
        raise MalformedReference(problems[0])
    return references


def reference_problems(value: str) -> list[ReferenceProblem]:
    """Every malformed reference in `value` (empty when all are fine)."""
    return scan_references(value)[1]


def is_single_reference(value: str) -> bool:
    """True when `value` is exactly one reference, such as `${API_KEY}`."""
    return _REFERENCE.fullmatch(value) is not None


def substitute(value: str, resolve: Callable[[EnvReference], str]) -> str:
    """`value` with each reference replaced by `resolve(reference)`.

    MalformedReference if `value` holds a malformed one; what a missing variable without a
    default means is for `resolve` to decide.
    """
    references = find_references(value)
    out: list[str] = []
    last = 0
    for reference in references:
        out.append(value[last : reference.start])
        out.append(resolve(reference))
        last = reference.end
    out.append(value[last:])
    return "".join(out)


def _describe(value: str, position: int) -> str:
    closing = value.find("}", position)
    if closing == -1:
        return "unclosed ${ reference (missing })"
    name = value[position + len(_OPEN) : closing].split(":", 1)[0]
    if not name:
        return "empty variable name in ${} reference"
    shown = name if len(name) <= 40 else name[:40] + "..."
    return f"invalid variable name {shown!r} in ${{...}} reference"
