"""Paths to values inside a bundle and their `tools[2].config` spelling."""

from __future__ import annotations

import json
import re

# A mapping key (as text) or a sequence index.
Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def format_path(path: Path) -> str:
    """`("tools", 2, "config")` → `tools[2].config`; odd keys are quoted: `config["a.b"]`."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _BARE_KEY.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)
