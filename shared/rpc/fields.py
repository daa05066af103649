"""Checks on request fields that every servicer makes before calling the domain."""

from __future__ import annotations

from shared.errors import FieldViolation, InvalidArgument


def required(value: str, field: str) -> str:
    """value, or INVALID_ARGUMENT naming field when it is empty."""
    if not value:
        raise InvalidArgument(
            f"{field} is required.",
            reason="FIELD_REQUIRED",
            violations=[FieldViolation(field, "is required")],
        )
    return value
