"""The two document shapes: pure YAML, or YAML frontmatter followed by a markdown body."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A delimiter line is exactly `---`; trailing blanks are tolerated because editors leave them.
_OPENING = re.compile(r"\ufeff?---[ \t]*\r?\n")
_CLOSING = re.compile(r"^---[ \t]*(?:\r?\n|\Z)", re.MULTILINE)


@dataclass(frozen=True)
class DocumentParts:
    """A document cut into pieces that `join` puts back together byte for byte."""

    opening: str
    yaml: str
    closing: str
    body: str | None
    # Lines before the YAML starts: 1 for frontmatter, 0 for pure YAML.
    line_offset: int

    @property
    def has_frontmatter(self) -> bool:
        """True for the `---` / YAML / `---` / markdown shape."""
        return self.body is not None

    def join(self, yaml_text: str | None = None) -> str:
        """The whole document again, optionally with replacement YAML."""
        yaml_part = self.yaml if yaml_text is None else yaml_text
        return self.opening + yaml_part + self.closing + (self.body or "")


def split_parts(text: str) -> DocumentParts:
    """Cuts `text` into delimiters, YAML and body; without a closing `---` it is pure YAML."""
    opening = _OPENING.match(text)
    if opening is not None:
        closing = _CLOSING.search(text, opening.end())
        if closing is not None:
            return DocumentParts(
                opening=opening.group(),
                yaml=text[opening.end() : closing.start()],
                closing=closing.group(),
                body=text[closing.end() :],
                line_offset=1,
            )
    return DocumentParts(opening="", yaml=text, closing="", body=None, line_offset=0)


def split_document(text: str) -> tuple[str, str | None, int]:
    """Returns (yaml_text, body or None, line offset of the YAML within the document)."""
    parts = split_parts(text)
    return parts.yaml, parts.body, parts.line_offset
