"""List RPC conventions shared by both services: page sizes, opaque page tokens, filters.

Filters are the AIP-160 subset both services need: comparisons joined by AND, for example
`name = "dev" AND tags.team = "core"`. A value may use `*` as a wildcard with `=` and `!=`.
Page tokens are keyset cursors bound to the filter that produced them, so a token replayed
with another filter is refused instead of silently skipping or repeating items.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 2048


def page_size(requested: int, field: str = "page_size") -> int:
    """0 means the default; negative is refused; anything above the maximum is capped."""
    if requested < 0:
        raise InvalidArgument(
            f"{field} must not be negative.",
            reason="INVALID_PAGE_SIZE",
            violations=[FieldViolation(field, f"must be >= 0, got {requested}")],
        )
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def page_scope(*parts: str) -> str:
    """A short digest of what a token is valid for (the filter, the parent, the view...)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def encode_page_token(after: Sequence[str | int], scope: str) -> str:
    """An opaque token resuming after the keyset position `after`."""
    raw = json.dumps({"a": list(after), "s": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, scope: str, field: str = "page_token") -> list[Any]:
    """The keyset position in token; INVALID_ARGUMENT if it is corrupt or from another query."""
    if not token:
        return []
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, token_scope = payload["a"], payload["s"]
        if not isinstance(after, list):
            raise TypeError("position is not a list")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidArgument(
            "page_token is not a token this service issued.",
            reason="INVALID_PAGE_TOKEN",
            violations=[FieldViolation(field, "malformed page token")],
        ) from exc
    if token_scope != scope:
        raise InvalidArgument(
            "page_token was issued for a different filter or request.",
            reason="PAGE_TOKEN_MISMATCH",
            violations=[
                FieldViolation(field, "must be used with the same filter as the first page")
            ],
        )
    return after


@dataclass(frozen=True)
class Condition:
    """One comparison of a filter."""

    field: str
    op: str  # "=" or "!="
    value: str

    @property
    def is_pattern(self) -> bool:
        """True when the value uses `*` wildcards."""
        return "*" in self.value


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op>!=|=)
      | (?P<word>[A-Za-z0-9_.\-/*:@+]+)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _filter_error(f"unexpected character {text[position:].lstrip()[:1]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _filter_error(problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"Invalid filter: {problem}.",
        reason="INVALID_FILTER",
        violations=[FieldViolation("filter", problem)],
    )


def parse_filter(text: str, fields: Sequence[str], prefixes: Sequence[str] = ()) -> list[Condition]:
    """Parses `a = "x" AND b != y`; fields are the exact names allowed, prefixes like `tags.`."""
    if len(text) > MAX_FILTER_LENGTH:
        raise _filter_error(f"longer than {MAX_FILTER_LENGTH} characters")
    tokens = _tokens(text)
    conditions: list[Condition] = []
    index = 0
    while index < len(tokens):
        if conditions:
            if tokens[index] != ("word", "AND"):
                raise _filter_error(f"expected AND, found {tokens[index][1]!r}")
            index += 1
        if index + 3 > len(tokens):
            raise _filter_error("expected FIELD = VALUE")
        (field_kind, field), (op_kind, op), (value_kind, value) = tokens[index : index + 3]
        if field_kind != "word" or op_kind != "op" or value_kind not in ("word", "string"):
            raise _filter_error("expected FIELD = VALUE")
        known = field in fields or any(
            field.startswith(p) and len(field) > len(p) for p in prefixes
        )
        if not known:
            allowed = ", ".join([*fields, *(p + "KEY" for p in prefixes)])
            raise _filter_error(f"unknown field {field!r} (filterable: {allowed})")
        if value_kind == "string":
            value = json.loads(value)
        conditions.append(Condition(field, op, value))
        index += 3
    return conditions


def like_pattern(value: str) -> str:
    """The SQL LIKE pattern (escape character `\\`) for a value with `*` wildcards."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, with what the client needs to ask for the next."""

    items: list[T]
    next_page_token: str
    total_size: int


def page_of(
    items: Sequence[T],
    size: int,
    scope: str,
    position: Callable[[T], Sequence[str | int]],
    total: int,
) -> Page[T]:
    """A page from up to size + 1 items read: the extra one says another page follows.

    position gives what the next page's token resumes after (the last item's sort key).
    """
    token = encode_page_token(position(items[size - 1]), scope) if len(items) > size else ""
    return Page(items=list(items[:size]), next_page_token=token, total_size=total)
