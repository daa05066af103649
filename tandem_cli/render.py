"""How `tandem` shows things: tables, JSON and YAML, located violations, decoded errors.

JSON (`--output json`) uses protojson's field names (camelCase, as `buf curl` prints them);
unlike protojson, fields at their default value are kept, so every key is always present,
enums are their short names ("ACTIVE"), and timestamps are RFC 3339 in UTC. YAML is the
same tree. Reads no config keys.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from rich.console import Console
from rich.text import Text
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from tandem_client import TandemError, Violation


class OutputFormat(enum.StrEnum):
    """What a read command prints."""

    table = "table"
    json = "json"
    yaml = "yaml"


def camel(name: str) -> str:
    """protojson's name for a snake_case field."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def error_wire(error: TandemError) -> dict[str, Any]:
    """An error as JSON: its status, reason, message and details."""
    return {
        "code": error.code,
        "reason": error.reason,
        "message": error.message,
        "metadata": dict(error.metadata),
        "fieldViolations": [
            {"field": v.field, "description": v.description} for v in error.field_violations
        ],
        "preconditionViolations": [
            {"type": v.type, "subject": v.subject, "description": v.description}
            for v in error.precondition_violations
        ],
    }


def wire(value: Any) -> Any:
    """A client result (dataclass, list, mapping, datetime) as plain JSON values."""
    if isinstance(value, TandemError):
        return error_wire(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {camel(f.name): wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): wire(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [wire(v) for v in value]
    return value


def dump_json(value: Any) -> str:
    """Indented JSON of a result."""
    return json.dumps(wire(value), indent=2, ensure_ascii=False)


def _literal_blocks(value: Any) -> Any:
    # Multi-line strings (documents, replies) read best as YAML block scalars.
    if isinstance(value, dict):
        return {k: _literal_blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal_blocks(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value


def dump_yaml(value: Any) -> str:
    """YAML of a result, as the same tree as its JSON."""
    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(_literal_blocks(wire(value)), buffer)
    return buffer.getvalue()


def emit(console: Console, output: OutputFormat, value: Any) -> bool:
    """Prints value as JSON or YAML and returns True; False when a table is wanted."""
    if output is OutputFormat.json:
        console.out(dump_json(value), highlight=False)
        return True
    if output is OutputFormat.yaml:
        console.out(dump_yaml(value), end="", highlight=False)
        return True
    return False


class Located(NamedTuple):
    """One problem to show against a document's lines."""

    line: int
    column: int
    severity: str  # "error" or "warning"
    message: str
    field: str


# Servers append "(line N, column M)" to a located field violation's description.
_LOCATION = re.compile(r"\s*\(line \d+, column \d+\)\s*$")


def located_from_violations(violations: Iterable[Violation]) -> list[Located]:
    """A validation's violations, ready to render."""
    return [
        Located(
            v.line, v.column, "warning" if v.severity == "WARNING" else "error", v.message, v.field
        )
        for v in violations
    ]


def located_from_error(error: TandemError) -> list[Located]:
    """An error's field violations, located by the line and column their description names."""
    return [
        Located(v.line, v.column, "error", _LOCATION.sub("", v.description), v.field)
        for v in error.field_violations
    ]


def render_located(console: Console, source: str, text: str, problems: Sequence[Located]) -> None:
    """Each problem as a compiler would show it: `file:line:col: error: message`, the source
    line, and a caret under the column."""
    lines = text.splitlines()
    for problem in problems:
        where = source
        if problem.line:
            where += f":{problem.line}"
            if problem.column:
                where += f":{problem.column}"
        style = "bold red" if problem.severity == "error" else "bold yellow"
        head = Text.assemble(
            (f"{where}: ", "bold"),
            (f"{problem.severity}: ", style),
            problem.message,
            (f" [{problem.field}]" if problem.field else "", "dim"),
        )
        console.print(head, soft_wrap=True, highlight=False)
        if 0 < problem.line <= len(lines):
            source_line = lines[problem.line - 1].replace("\t", " ")
            console.print(Text(f"  {source_line}"), soft_wrap=True, highlight=False)
            caret = " " * (max(problem.column, 1) - 1) + "^"
            console.print(Text(f"  {caret}", style=style), soft_wrap=True, highlight=False)


def render_error(
    console: Console, error: TandemError, *, source: str = "", text: str | None = None
) -> None:
    """Every detail of a failed call; field violations against the document when given."""
    located = located_from_error(error) if text is not None else []
    shown = [p for p in located if p.line]
    console.print(
        Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True, highlight=False
    )
    for key, value in sorted(error.metadata.items()):
        console.print(Text(f"  {key}: {value}"), soft_wrap=True, highlight=False)
    for violation in error.field_violations:
        if text is not None and violation.line:
            continue
        console.print(
            Text(f"  field {violation.field or '(request)'}: {violation.description}"),
            soft_wrap=True,
            highlight=False,
        )
    for precondition in error.precondition_violations:
        console.print(
            Text(
                f"  precondition {precondition.type} {precondition.subject}: "
                f"{precondition.description}"
            ),
            soft_wrap=True,
            highlight=False,
        )
    for quota in error.quota_violations:
        console.print(
            Text(f"  quota {quota.subject}: {quota.description}"), soft_wrap=True, highlight=False
        )
    if error.resource is not None:
        name = f"{error.resource.resource_type} {error.resource.resource_name}".strip()
        console.print(Text(f"  resource: {name}"), soft_wrap=True, highlight=False)
    if error.retry_delay is not None:
        console.print(
            Text(f"  retry after: {error.retry_delay:g}s"), soft_wrap=True, highlight=False
        )
    if shown and text is not None:
        render_located(console, source, text, shown)


# Exit codes by status class; documented in tandem_cli.main and the README.
EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_EXIT_CODES: dict[str, int] = {
    "INVALID_ARGUMENT": 3,
    "OUT_OF_RANGE": 3,
    "NOT_FOUND": 4,
    "ALREADY_EXISTS": 5,
    "FAILED_PRECONDITION": 6,
    "ABORTED": 6,
    "PERMISSION_DENIED": 7,
    "UNAUTHENTICATED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "UNAVAILABLE": 9,
    "DEADLINE_EXCEEDED": 9,
}
EXIT_SERVER = 10


def exit_code(error: TandemError) -> int:
    """The exit code of a failed call's status class."""
    return _EXIT_CODES.get(error.code, EXIT_SERVER)


def when(value: datetime | None) -> str:
    """A timestamp for a table, in UTC to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""
