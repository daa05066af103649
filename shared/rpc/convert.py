"""Conversions between domain values and protobuf well-known types."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp."""
    # Exact timedelta arithmetic: Timestamp.FromDatetime goes through a time tuple, which
    # costs as much as the rest of an event's conversion.
    since = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000
    )


def struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain data; whole-number floats (how Structs carry numbers) become ints."""

    def convert(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, Mapping):
            return {k: convert(v) for k, v in item.items()}
        if isinstance(item, list):
            return [convert(v) for v in item]
        return item

    return {k: convert(v) for k, v in json_format.MessageToDict(struct).items()}
