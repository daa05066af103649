"""List RPC conventions shared by both services: page sizes, opaque page tokens, filters.

Filters are the AIP-160 subset both services need: comparisons joined by AND, for example
`name = "dev" AND tags.team = "core"`. A value may use `*` as a wildcard with `=` and `!=`.
Page tokens are keyset cursors bound to the tenant and filter that produced them, so a token
replayed with another filter is refused instead of silently skipping or repeating items. They
are signed (HMAC) with the server's key: a token a client made up or altered is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
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
    """A short digest of what a token is valid for (the tenant, the filter, the parent...)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


MAX_PAGE_TOKEN_LENGTH = 1024
_MAC_BYTES = 16
# Longest keyset value a token carries (an id, a timestamp); anything longer was not issued.
_MAX_POSITION_TEXT = 512


@dataclass(frozen=True)
class PageTokenKeys:
    """The keys page tokens are signed with: the first signs, every one verifies.

    Every replica of a service must hold the same keys, or a token issued by one replica is
    refused by the next. Listing an old key after the new one lets tokens already handed out
    keep working through a rotation.
    """

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("at least one page token key is needed")

    @classmethod
    def from_setting(cls, text: str) -> PageTokenKeys:
        """Keys from a comma-separated list of secrets (TANDEM_PAGE_TOKEN_KEY)."""
        secrets_ = [part.strip() for part in text.split(",") if part.strip()]
        if not secrets_ or any(len(secret) < 16 for secret in secrets_):
            raise ValueError("each page token key must be at least 16 characters long")
        return cls(tuple(_stretch(b"configured", secret) for secret in secrets_))

    @classmethod
    def derived(cls, material: str) -> PageTokenKeys:
        """A key derived from what every replica of a deployment shares (its database URL)."""
        return cls((_stretch(b"derived", material),))

    def sign(self, payload: bytes) -> bytes:
        """The token's MAC, with the signing key."""
        return hmac.new(self.keys[0], payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def verify(self, payload: bytes, mac: bytes) -> bool:
        """True when mac is payload's MAC under any of the keys."""
        return any(
            hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES], mac)
            for key in self.keys
        )


def _stretch(kind: bytes, secret: str) -> bytes:
    return hashlib.sha256(b"tandem page token key\x00" + kind + b"\x00" + secret.encode()).digest()


_call_keys: ContextVar[PageTokenKeys | None] = ContextVar("tandem_page_token_keys", default=None)


def use_page_token_keys(keys: PageTokenKeys) -> None:
    """Signs and verifies the current call's page tokens with keys (set by the server)."""
    _call_keys.set(keys)


@cache
def _process_keys() -> PageTokenKeys:
    # Only for code that lists outside a server (tools, tests): servers always set theirs.
    return PageTokenKeys((secrets.token_bytes(32),))


def _keys(keys: PageTokenKeys | None) -> PageTokenKeys:
    return keys or _call_keys.get() or _process_keys()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    data = base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))
    # Only the exact text issued: base64 decoding would skip stray characters and spare bits.
    if _b64encode(data) != text:
        raise ValueError("not canonical base64")
    return data


def encode_page_token(
    after: Sequence[str | int], scope: str, keys: PageTokenKeys | None = None
) -> str:
    """An opaque, signed token resuming after the keyset position `after`."""
    payload = json.dumps({"a": list(after), "s": scope}, separators=(",", ":")).encode()
    return f"{_b64encode(payload)}.{_b64encode(_keys(keys).sign(payload))}"


def invalid_page_token(field: str = "page_token") -> InvalidArgument:
    """The error for a page token that does not hold a position this service issued."""
    return _malformed(field)


def _malformed(field: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field} is not a token this service issued.",
        reason="INVALID_PAGE_TOKEN",
        violations=[FieldViolation(field, "not a page token this service issued")],
    )


def _position(value: Any) -> list[str | int]:
    if not isinstance(value, list) or len(value) > 4:
        raise TypeError("position is not a short list")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise TypeError("position holds something other than text and integers")
        if isinstance(item, str) and len(item) > _MAX_POSITION_TEXT:
            raise TypeError("position text is too long")
    return value


def decode_page_token(
    token: str,
    scope: str,
    field: str = "page_token",
    keys: PageTokenKeys | None = None,
    shape: Sequence[type] | None = None,
) -> list[Any]:
    """The keyset position in token; INVALID_ARGUMENT unless this service issued it for scope.

    Whatever the token holds, the answer is a position or INVALID_ARGUMENT, never another
    error: the signature is checked before anything in the token is parsed. shape, the type
    of each position value (`(str,)`, `(int,)`), guards callers even where the key could be
    guessed (a default key derived from a database URL without a password).
    """
    if not token:
        return []
    if len(token) > MAX_PAGE_TOKEN_LENGTH or token.count(".") != 1:
        raise _malformed(field)
    encoded_payload, encoded_mac = token.split(".")
    try:
        payload, mac = _b64decode(encoded_payload), _b64decode(encoded_mac)
    except (ValueError, binascii.Error) as exc:
        raise _malformed(field) from exc
    if not _keys(keys).verify(payload, mac):
        raise _malformed(field)
    try:
        data = json.loads(payload)
        after, token_scope = _position(data["a"]), data["s"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise _malformed(field) from exc
    if shape is not None and (
        len(after) != len(shape)
        or not all(isinstance(v, t) for v, t in zip(after, shape, strict=True))
    ):
        raise _malformed(field)
    if token_scope != scope:
        raise InvalidArgument(
            f"{field} was issued for a different filter or request.",
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
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise _filter_error(f"invalid string literal for {field!r}") from exc
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
