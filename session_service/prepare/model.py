"""What preparation produces."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import FailedPrecondition, FieldViolation
from shared.visibility import Readers


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
class PreparedAgent:
    """An agent the bundle offers: from an agent file, or declared inline by a bundle."""

    name: str
    description: str
    # The agent file's config name, or the label of the bundle that declared it.
    source: str
    instruction: str = ""
    # What the agent file sets besides `meta` (providers, tools, hooks, session), as written.
    overlay: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # The modules a child session running the agent gets: its overlay composed over the
    # parent's document. None: the parent's modules.
    modules: tuple[ResolvedModule, ...] | None = None
    # The tool modules the agent names itself: kept even when the parent excludes them.
    declared_tools: frozenset[str] = frozenset()
    default_provider: str = ""
    default_provider_field: str = ""


@dataclass(frozen=True)
class ContextFile:
    """A context file loaded into the system context, with why it was loaded."""

    name: str
    origin: str
    text: str


@dataclass(frozen=True)
class PreparedSkill:
    """A skill of a package (`NS:skills/NAME/SKILL.md` and its folder), for tool-skills."""

    name: str
    description: str
    namespace: str
    # The folder's path in the package, e.g. "skills/review".
    folder: str
    # SKILL.md without its frontmatter.
    body: str
    # The folder's other files by path inside it ("reference/x.md" -> text).
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    version: str = ""
    license: str = ""


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
    # Problems that do not stop a session: keys a module does not read, no provider at all.
    warnings: tuple[FieldViolation, ...] = ()
    # The provider turns use (module name, and where it is in the composed document).
    default_provider: str = ""
    default_provider_field: str = ""
    agents: tuple[PreparedAgent, ...] = ()
    # In the order they appear in the system context, each once.
    context: tuple[ContextFile, ...] = ()
    # Skills handed to a tool-skills module, by name (each once).
    skills: tuple[PreparedSkill, ...] = ()
    # Who may see each stored config it was composed from (the config itself included), by
    # name: a cached bundle is handed only to callers who may see all of them.
    readers: Mapping[str, Readers] = dataclasses.field(default_factory=dict)

    @property
    def system_instruction(self) -> str:
        """The instruction, then every context file, each marked with its name."""
        parts = [self.instruction] if self.instruction else []
        parts.extend(
            f'<context_file name="{item.name}">\n{item.text.strip()}\n</context_file>'
            for item in self.context
        )
        return "\n\n".join(parts)


class PreparationFailed(FailedPrecondition):
    """A revision that cannot be prepared; `violations` lists every problem, located."""
