"""Checks on request fields that every servicer makes before calling the domain.

`check_request` runs on every decoded request at the server's boundary; the others are for
servicers to apply to the fields whose limits are theirs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from shared.errors import FieldViolation, InvalidArgument, elide

# Strings, list items and map entries one request may hold, all fields together. Each
# servicer caps its own fields far lower; this bounds the boundary's own walk.
MAX_REQUEST_ELEMENTS = 100_000
_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST = "google.protobuf.ListValue"


def required(value: str, field: str) -> str:
    """value, or INVALID_ARGUMENT naming field when it is empty."""
    if not value:
        raise InvalidArgument(
            f"{field} is required.",
            reason="FIELD_REQUIRED",
            violations=[FieldViolation(field, "is required")],
        )
    return value


def _key(key: Any) -> str:
    return f"[{json.dumps(elide(str(key), 64))}]"


def _strings(message: Message, path: str) -> Iterator[tuple[str, str]]:
    """Every string in message with its path; Structs read as `context["a"][0]`."""
    stack: list[tuple[Message, str]] = [(message, path)]
    while stack:
        current, prefix = stack.pop()
        kind = current.DESCRIPTOR.full_name
        if kind == _STRUCT:
            for key, value in current.fields.items():  # type: ignore[attr-defined]
                yield f"{prefix}{_key(key)}", key
                stack.append((value, f"{prefix}{_key(key)}"))
            continue
        if kind == _LIST:
            for index, value in enumerate(current.values):  # type: ignore[attr-defined]
                stack.append((value, f"{prefix}[{index}]"))
            continue
        for field, value in current.ListFields():
            name = prefix if kind == _VALUE else f"{prefix}.{field.name}" if prefix else field.name
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    if isinstance(key, str):
                        yield f"{name}{_key(key)}", key
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        stack.append((item, f"{name}{_key(key)}"))
                    elif isinstance(item, str):
                        yield f"{name}{_key(key)}", item
            elif field.is_repeated:
                for index, item in enumerate(value):
                    if isinstance(item, Message):
                        stack.append((item, f"{name}[{index}]"))
                    elif isinstance(item, str):
                        yield f"{name}[{index}]", item
            elif isinstance(value, Message):
                stack.append((value, name))
            elif isinstance(value, str):
                yield name, value


def check_request(message: Message) -> None:
    """Refuses a request with U+0000 in any string, or with too many elements in all.

    U+0000 is refused everywhere, free text included: PostgreSQL cannot store it in text,
    and one rule on every field and both databases is easier to rely on than a filter.
    """
    for elements, (path, text) in enumerate(_strings(message, ""), start=1):
        if elements > MAX_REQUEST_ELEMENTS:
            raise InvalidArgument(
                f"The request holds more than {MAX_REQUEST_ELEMENTS} strings and entries.",
                reason="REQUEST_TOO_LARGE",
                violations=[FieldViolation(path, "too many elements in the request")],
            )
        if "\x00" in text:
            raise InvalidArgument(
                f"{path} contains a NUL character (U+0000).",
                reason="NUL_CHARACTER",
                violations=[
                    FieldViolation(path, f"must not contain U+0000 (at index {text.index(chr(0))})")
                ],
            )


def check_count(items: Sized, field: str, maximum: int, what: str = "entries") -> None:
    """Refuses a list or map with more than maximum items, naming it."""
    if len(items) > maximum:
        raise InvalidArgument(
            f"{field} has {len(items)} {what}; at most {maximum} are allowed.",
            reason="FIELD_TOO_LARGE",
            violations=[FieldViolation(field, f"more than {maximum} {what}")],
        )


@dataclass(frozen=True)
class StructLimits:
    """How large a `google.protobuf.Struct` field may be."""

    max_bytes: int = 64 * 1024
    max_entries: int = 4_096
    max_depth: int = 16


def check_struct(struct: Message, field: str, limits: StructLimits) -> None:
    """Refuses a Struct over its size, entry count or depth, naming the field.

    The size is checked first (in C); the walk then stops at the first limit it crosses,
    so its cost is bounded by the limits, not by what the client sent.
    """
    size = struct.ByteSize()
    if size > limits.max_bytes:
        raise InvalidArgument(
            f"{field} is {size} bytes; at most {limits.max_bytes} are allowed.",
            reason="FIELD_TOO_LARGE",
            violations=[FieldViolation(field, f"larger than {limits.max_bytes} bytes")],
        )
    entries = 0
    stack: list[tuple[Any, int]] = [(struct, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limits.max_depth:
            raise InvalidArgument(
                f"{field} is nested more than {limits.max_depth} levels deep.",
                reason="NESTING_TOO_DEEP",
                violations=[FieldViolation(field, f"nested deeper than {limits.max_depth}")],
            )
        kind = current.DESCRIPTOR.full_name
        children = (
            list(current.fields.values())
            if kind == _STRUCT
            else list(current.values)
            if kind == _LIST
            else []
        )
        entries += len(children)
        if entries > limits.max_entries:
            raise InvalidArgument(
                f"{field} has more than {limits.max_entries} entries.",
                reason="FIELD_TOO_LARGE",
                violations=[FieldViolation(field, f"more than {limits.max_entries} entries")],
            )
        for child in children:
            which = child.WhichOneof("kind")
            if which == "struct_value":
                stack.append((child.struct_value, depth + 1))
            elif which == "list_value":
                stack.append((child.list_value, depth + 1))
