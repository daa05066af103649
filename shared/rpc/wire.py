"""Reading a request's raw protobuf bytes, to say which field makes it unacceptable.

protobuf refuses a whole message without saying which field was wrong (a `string` that is
not UTF-8, nesting deeper than the decoder allows). Walking the wire format against the
descriptor finds the field, so the client gets a pointed INVALID_ARGUMENT.

The walk runs only on a request that already passed authentication and its method's size
cap, and it is bounded anyway: one pass over the bytes with an explicit stack (no recursion,
no copies of the remaining bytes), at most `MAX_DEPTH` levels and `MAX_FIELDS` fields.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from enum import Enum

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# The nesting the protobuf decoder (upb) accepts; a deeper message is why it refused one.
MAX_DEPTH = 100
# Fields read before the walk gives up; a request within its size cap rarely has this many.
MAX_FIELDS = 200_000
# Types whose inner names say nothing to a client: a problem inside is reported at the field
# that holds them (`context`, not `context.fields.value.struct_value...`).
_OPAQUE_TYPES = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)


class Problem(Enum):
    """Why a request cannot be decoded."""

    INVALID_UTF8 = "INVALID_UTF8"
    TOO_DEEP = "TOO_DEEP"


@dataclass(frozen=True)
class WireProblem:
    """The first field (path from the request root) that makes the request undecodable."""

    field: str
    problem: Problem
    # For INVALID_UTF8: where in the string, 1-based line and column of the bad byte.
    byte_offset: int = 0
    line: int = 0
    column: int = 0


class _Truncated(Exception):
    pass


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Truncated
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


@dataclass
class _Frame:
    descriptor: Descriptor
    pos: int
    end: int
    path: str
    # Inside a map entry or a Struct: deeper names are not appended.
    opaque: bool


def _child_path(frame: _Frame, field: FieldDescriptor) -> str:
    if frame.opaque:
        return frame.path
    return f"{frame.path}.{field.name}" if frame.path else field.name


def _opens_opaque(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and (
        message.full_name in _OPAQUE_TYPES or message.GetOptions().map_entry
    )


def _bad_utf8(data: bytes, view: memoryview, start: int, end: int, path: str) -> WireProblem | None:
    try:
        codecs.utf_8_decode(view[start:end], "strict", True)
    except UnicodeDecodeError as exc:
        at = start + exc.start
        line = data.count(b"\n", start, at) + 1
        column = at - (data.rfind(b"\n", start, at) + 1 if line > 1 else start) + 1
        return WireProblem(path, Problem.INVALID_UTF8, exc.start, line, column)
    return None


def find_problem(
    descriptor: Descriptor,
    data: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_fields: int = MAX_FIELDS,
) -> WireProblem | None:
    """The first string that is not UTF-8, or the first message nested past max_depth.

    None when neither is found (malformed bytes, or the walk ran out of its field budget).
    """
    view = memoryview(data)
    stack = [_Frame(descriptor, 0, len(data), "", False)]
    fields = 0
    try:
        while stack:
            frame = stack[-1]
            if frame.pos >= frame.end:
                stack.pop()
                continue
            fields += 1
            if fields > max_fields:
                return None
            key, frame.pos = _varint(data, frame.pos, frame.end)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, frame.pos = _varint(data, frame.pos, frame.end)
                continue
            if wire_type in (1, 5):
                frame.pos += 8 if wire_type == 1 else 4
                continue
            if wire_type != 2:
                return None
            length, start = _varint(data, frame.pos, frame.end)
            frame.pos = start + length
            if frame.pos > frame.end:
                return None
            field = frame.descriptor.fields_by_number.get(number)
            if field is None:
                continue
            path = _child_path(frame, field)
            if field.type == FieldDescriptor.TYPE_STRING:
                bad = _bad_utf8(data, view, start, frame.pos, path)
                if bad is not None:
                    return bad
            elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
                # The child would sit at depth len(stack), the request itself being 0.
                if len(stack) > max_depth:
                    return WireProblem(path, Problem.TOO_DEEP)
                opaque = frame.opaque or _opens_opaque(field)
                stack.append(_Frame(field.message_type, start, frame.pos, path, opaque))
    except _Truncated:
        return None
    return None


def largest_field(descriptor: Descriptor, data: bytes, *, max_fields: int = MAX_FIELDS) -> str:
    """The path of the field holding most of data's bytes, descending into messages.

    It names what made a request too large. Each level is one pass over its fields, and
    only the largest message field is entered.
    """
    path = ""
    start, end = 0, len(data)
    current: Descriptor | None = descriptor
    opaque = False
    fields = 0
    try:
        while current is not None and not opaque:
            sizes: dict[int, int] = {}
            spans: dict[int, tuple[int, int]] = {}
            pos = start
            while pos < end:
                fields += 1
                if fields > max_fields:
                    return path
                key, pos = _varint(data, pos, end)
                number, wire_type = key >> 3, key & 7
                if wire_type == 0:
                    _, pos = _varint(data, pos, end)
                    size = 1
                elif wire_type in (1, 5):
                    size = 8 if wire_type == 1 else 4
                    pos += size
                elif wire_type == 2:
                    size, begin = _varint(data, pos, end)
                    pos = begin + size
                    spans[number] = (begin, min(pos, end))
                else:
                    return path
                sizes[number] = sizes.get(number, 0) + size
            known = {n: s for n, s in sizes.items() if n in current.fields_by_number}
            if not known:
                return path
            number = max(known, key=lambda n: known[n])
            field = current.fields_by_number[number]
            path = f"{path}.{field.name}" if path else field.name
            if field.type != FieldDescriptor.TYPE_MESSAGE or number not in spans:
                return path
            # A repeated or map field is named as a whole; a single message is entered.
            if field.is_repeated:
                return path
            opaque = _opens_opaque(field)
            start, end = spans[number]
            current = field.message_type
    except _Truncated:
        return path
    return path
