"""Locating what made a request undecodable, so the client gets a pointed INVALID_ARGUMENT.

protobuf refuses a whole message when a `string` field holds invalid UTF-8 without saying
which field; walking the wire format against the descriptor finds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor


@dataclass(frozen=True)
class BadString:
    """A string field whose bytes are not UTF-8."""

    field: str
    byte_offset: int
    line: int
    column: int


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def find_bad_string(descriptor: Descriptor, data: bytes, prefix: str = "") -> BadString | None:
    """The first string field (path from the request root) that is not valid UTF-8."""
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                chunk = data[pos : pos + length]
                pos += length
                field = descriptor.fields_by_number.get(number)
                if field is None:
                    continue
                path = prefix + field.name
                if field.type == FieldDescriptor.TYPE_STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        before = chunk[: exc.start]
                        line = before.count(b"\n") + 1
                        column = exc.start - (before.rfind(b"\n") + 1) + 1
                        return BadString(path, exc.start, line, column)
                elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type:
                    found = find_bad_string(field.message_type, chunk, path + ".")
                    if found is not None:
                        return found
            else:
                return None
    except ValueError:
        return None
    return None
