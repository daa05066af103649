"""YAML 1.2 core-schema scalars: the tags a bundle may use and how scalar text becomes a value.

The implicit rules mirror ruamel.yaml's YAML 1.2 resolver, so the validator and the
round-trip editor agree on what a plain scalar means. Timestamps and binary stay text:
bundle data must be plain and JSON-friendly.
"""

from __future__ import annotations

import math
import re
from typing import Any

TAG_PREFIX = "tag:yaml.org,2002:"

SCALAR_TAGS = frozenset(
    TAG_PREFIX + name
    for name in ("str", "int", "float", "bool", "null", "timestamp", "binary", "merge")
)
MAPPING_TAGS = frozenset(TAG_PREFIX + name for name in ("map", "set"))
SEQUENCE_TAGS = frozenset(TAG_PREFIX + name for name in ("seq", "omap"))
STANDARD_TAGS = SCALAR_TAGS | MAPPING_TAGS | SEQUENCE_TAGS

MERGE_TAG = TAG_PREFIX + "merge"
MERGE_KEY = "<<"

_NULL = re.compile(r"(?:~|null|Null|NULL|)\Z")
_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_INT = re.compile(
    r"""(?:[-+]?0b[0-1_]+
    |[-+]?0o?[0-7_]+
    |[-+]?[0-9_]+
    |[-+]?0x[0-9a-fA-F_]+)\Z""",
    re.VERBOSE,
)
_FLOAT = re.compile(
    r"""(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))\Z""",
    re.VERBOSE,
)


class ScalarError(ValueError):
    """Scalar text that does not fit its explicit tag."""


def short_tag(tag: str) -> str:
    """`tag:yaml.org,2002:python/object` → `!!python/object`, as it is usually written."""
    return "!!" + tag[len(TAG_PREFIX) :] if tag.startswith(TAG_PREFIX) else tag


def resolve_plain(text: str) -> Any:
    """The value of an untagged plain scalar."""
    if _NULL.match(text):
        return None
    if _BOOL.match(text):
        return text.lower() == "true"
    if _INT.match(text):
        try:
            return _to_int(text)
        except ValueError:
            return text
    if _FLOAT.match(text):
        try:
            return _to_float(text)
        except ValueError:
            return text
    return text


def resolve_tagged(text: str, tag: str) -> Any:
    """The value of a scalar with an explicit standard tag; ScalarError when it does not fit."""
    name = tag[len(TAG_PREFIX) :]
    try:
        if name == "int":
            return _to_int(text.strip())
        if name == "float":
            return _to_float(text.strip())
    except ValueError:
        raise ScalarError(f"{text!r} is not a valid {short_tag(tag)}") from None
    if name == "bool":
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ScalarError(f"{text!r} is not a valid !!bool")
        return lowered == "true"
    if name == "null":
        if not _NULL.match(text.strip()):
            raise ScalarError(f"{text!r} is not a valid !!null")
        return None
    return text


def _to_int(text: str) -> int:
    cleaned = text.replace("_", "")
    sign = -1 if cleaned.startswith("-") else 1
    digits = cleaned.lstrip("+-")
    for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
        if digits.startswith(prefix):
            return sign * int(digits[2:], base)
    return sign * int(digits, 10)


def _to_float(text: str) -> float:
    cleaned = text.replace("_", "")
    lowered = cleaned.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(cleaned)
