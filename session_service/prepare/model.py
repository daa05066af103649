"""What preparation produces."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResolvedModule:
    """A module named by the bundle, resolved to an installed implementation."""

    kind: str  # provider, tool, hook, orchestrator, context
    module: str
    source: str
    field: str  # where it appears in the composed document, e.g. "tools[1]"
    implementation: str  # the entry point's "package.module:object"
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class PreparedBundle:
    """An immutable, fully prepared config revision, shared by every session on it.

    `document` holds expanded values, secrets included, and lives only in memory; `masked`
    is the same document with every environment reference shown as written, for display.
    """

    tenant_id: str
    config_id: str
    revision: int
    name: str
    document: Mapping[str, Any]
    masked: Mapping[str, Any]
    instruction: str
    modules: tuple[ResolvedModule, ...]
    # The bundles composed, in order, the config itself last: "foundation", "config:team-base".
    composed_from: tuple[str, ...]
    # Every include name it looked up (directly or not, found or not), for invalidation.
    included_configs: frozenset[str]
    # The revision of each included config when this was prepared: name -> (id, revision).
    included_revisions: Mapping[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()
