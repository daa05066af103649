"""Raw protobuf wire bytes, for requests no generated stub can build."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """A base-128 varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_struct(levels: int, leaf: bytes = b"") -> bytes:
    """A Struct nested `levels` deep through `{"k": {"k": ...}}`; leaf goes innermost."""
    inner = leaf
    for _ in range(levels):
        value = field(5, inner)  # Value.struct_value
        inner = field(1, field(1, b"k") + field(2, value))  # Struct.fields entry
    return inner


def padded_leaf(size: int) -> bytes:
    """Struct fields holding {"pad": "xxx..."}."""
    return field(1, field(1, b"pad") + field(2, field(3, b"x" * size)))


def send_message_bytes(session_id: str, context: bytes) -> bytes:
    """A SendMessageRequest whose context (field 4) is the given Struct bytes."""
    return field(1, session_id.encode()) + field(2, b"hi") + field(4, context)


def add_tool_bytes(config_id: str, struct: bytes) -> bytes:
    """An AddToolRequest whose config (field 4) is the given Struct bytes."""
    return field(1, config_id.encode()) + field(2, b"tool-deep") + field(4, struct)
