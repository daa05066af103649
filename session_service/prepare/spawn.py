"""The rules that make a child session's bundle from its parent's: agents as child sessions.

A child session runs one agent of the parent's bundle (or the bundle itself, "self"). It
gets the agent's instruction and the agent file's modules composed over the parent's
(prepared with the parent, see the preparer), minus the tools the parent's delegate module
excludes from inheritance (`settings.exclude_tools`, default `delegate` and `task`, so that
children do not delegate further unless the bundle says so) and those the bundle's
`spawn.exclude_tools` names. A tool the agent file names itself is always kept. The
bundle's `spawn.max_depth` can only lower the operator's TANDEM_AGENTS_MAX_DEPTH.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from session_service.prepare.model import PreparedAgent, PreparedBundle

SELF_AGENT = "self"


def excluded(module: str, names: Collection[str]) -> bool:
    """Whether a tool module is named in an exclusion list, by module or tool name."""
    return module in names or module.removeprefix("tool-") in names


def for_agent(bundle: PreparedBundle, name: str, exclude_tools: Collection[str]) -> PreparedBundle:
    """What a child session running agent `name` (or "self") of bundle gets.

    The agent's instruction (the parent's for "self"), its modules, and every tool it
    inherits but the excluded ones; a tool the agent names itself is always kept. KeyError
    when the bundle has no such agent.
    """
    found = next((a for a in bundle.agents if a.name == name), None)
    if found is not None:
        agent = found
    elif name == SELF_AGENT:
        agent = PreparedAgent(SELF_AGENT, "", bundle.name, bundle.instruction)
    else:
        raise KeyError(name)
    modules = bundle.modules if agent.modules is None else agent.modules
    kept = tuple(
        m
        for m in modules
        if not (
            m.kind == "tool"
            and m.module not in agent.declared_tools
            and excluded(m.module, exclude_tools)
        )
    )
    provider = (
        (bundle.default_provider, bundle.default_provider_field)
        if agent.modules is None
        else (agent.default_provider, agent.default_provider_field)
    )
    return dataclasses.replace(
        bundle,
        instruction=agent.instruction or bundle.instruction,
        modules=kept,
        default_provider=provider[0],
        default_provider_field=provider[1],
    )


DELEGATE_MODULES = ("tool-delegate", "tool-task")
DEFAULT_EXCLUDED_TOOLS = ("delegate", "task")


def _names(value: Any) -> tuple[str, ...] | None:
    return tuple(str(name) for name in value) if isinstance(value, list) else None


def spawn_exclusions(bundle: PreparedBundle) -> tuple[str, ...]:
    """The tools children of bundle do not inherit: its delegate module's
    `settings.exclude_tools` (default delegate and task), plus the bundle's own
    `spawn.exclude_tools`."""
    excluded_here: tuple[str, ...] = DEFAULT_EXCLUDED_TOOLS
    for module in bundle.modules:
        if module.kind == "tool" and module.module in DELEGATE_MODULES:
            settings: Any = module.config.get("settings")
            if isinstance(settings, Mapping):
                excluded_here = _names(settings.get("exclude_tools")) or (
                    () if "exclude_tools" in settings else DEFAULT_EXCLUDED_TOOLS
                )
            break
    spawn: Any = bundle.document.get("spawn")
    from_bundle = _names(spawn.get("exclude_tools")) if isinstance(spawn, Mapping) else None
    return excluded_here + (from_bundle or ())


def spawn_max_depth(bundle: PreparedBundle) -> int | None:
    """The bundle's own cap on agent nesting (`spawn.max_depth`), if it sets one."""
    spawn: Any = bundle.document.get("spawn")
    value = spawn.get("max_depth") if isinstance(spawn, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
