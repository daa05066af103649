"""Resource ids and tags, the same rules in both services."""

from __future__ import annotations

import re
from collections.abc import Mapping

from shared.errors import FieldViolation, InvalidArgument

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
MAX_TAGS = 64
MAX_TAG_VALUE = 256


def check_id(value: str, field_path: str, reason: str) -> None:
    """Refuses an id that is not a short, URL-safe identifier; field_path names the id."""
    if not _ID.fullmatch(value):
        name = field_path.rsplit(".", 1)[-1]
        raise InvalidArgument(
            f"{name} must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            reason=reason,
            violations=[FieldViolation(field_path, "invalid identifier")],
        )


def tag_violations(tags: Mapping[str, str], field_path: str = "tags") -> list[FieldViolation]:
    """Every way tags break their limits: count, key syntax, value length."""
    violations = []
    if len(tags) > MAX_TAGS:
        violations.append(FieldViolation(field_path, f"more than {MAX_TAGS} tags"))
    for key, value in tags.items():
        if not _TAG_KEY.fullmatch(key):
            violations.append(FieldViolation(f"{field_path}[{key!r}]", "invalid tag key"))
        if len(value) > MAX_TAG_VALUE:
            violations.append(
                FieldViolation(f"{field_path}[{key!r}]", f"value longer than {MAX_TAG_VALUE}")
            )
    return violations
