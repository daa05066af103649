"""Value types of bundle validation; `shared.bundle.validate` re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.bundle.loader import Locations


class Severity(Enum):
    """How bad a violation is: an ERROR makes the document invalid, a WARNING does not."""

    ERROR = "ERROR"
    WARNING = "WARNING"


@dataclass(frozen=True)
class Violation:
    """One located problem in a bundle document.

    `field` is the path inside the YAML (`tools[2].config`, `bundle.name`), "" for problems
    with the whole document. `line` and `column` are 1-based in the whole document text,
    frontmatter delimiter included; 0 when unknown.
    """

    field: str
    line: int
    column: int
    message: str
    severity: Severity


@dataclass(frozen=True)
class BundleSummary:
    """What a bundle declares, for listings and filters."""

    name: str = ""
    version: str = ""
    description: str = ""
    providers: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()
    orchestrator: str = ""
    context: str = ""
    has_instruction: bool = False


@dataclass(frozen=True)
class ParsedBundle:
    """The parsed document: plain Python data and the markdown instruction."""

    data: dict[str, Any]
    instruction: str
    has_frontmatter: bool
    # Where each key and value is in the document, to locate findings made after parsing
    # (references that resolve to nothing, for example).
    locations: Locations | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ValidationResult:
    """Everything `validate_document` found."""

    violations: tuple[Violation, ...]
    summary: BundleSummary
    bundle: ParsedBundle | None

    @property
    def valid(self) -> bool:
        """True when no violation is an ERROR."""
        return not self.errors

    @property
    def errors(self) -> tuple[Violation, ...]:
        """The ERROR violations, in document order."""
        return tuple(v for v in self.violations if v.severity is Severity.ERROR)


@dataclass(frozen=True)
class Limits:
    """Caps that keep a hostile document cheap to refuse."""

    # UTF-8 size, checked before any parsing.
    max_bytes: int = 256 * 1024
    max_depth: int = 64
    # Counted with aliases expanded, so shared subtrees cannot multiply unnoticed.
    max_nodes: int = 20_000
    max_aliases: int = 200
