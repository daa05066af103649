"""The Preparer and its cache against an in-memory config source: no network, no database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from session_service.prepare.cache import PreparedCache
from session_service.prepare.egress import EgressPolicy
from session_service.prepare.environment import BundleEnvironment
from session_service.prepare.model import PreparationFailed, PreparedBundle
from session_service.prepare.modules import ModuleRegistry
from session_service.prepare.overrides import InvalidOverrides
from session_service.prepare.preparer import ModuleReach, Preparer
from session_service.prepare.source import FetchedConfig
from session_service.prepare.watcher import WatchState
from session_service.workspace import Sandbox
from shared.errors import NotFound

REGISTRY = ModuleRegistry(
    {
        "provider": {"provider-echo": "session_service.modules.echo:EchoProvider"},
        "tool": {"tool-filesystem": "session_service.modules.filesystem:FilesystemTool"},
        "orchestrator": {
            "loop-basic": "session_service.modules.loops:BasicLoop",
            "loop-streaming": "session_service.modules.loops:StreamingLoop",
        },
        "context": {"context-simple": "session_service.modules.contexts:SimpleContext"},
        "hook": {"hooks-logging": "session_service.modules.hooks:LoggingHook"},
    }
)


@dataclass
class MemorySource:
    """Configs by id, each a list of revisions; counts the reads preparation makes."""

    configs: dict[str, list[FetchedConfig]] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    def put(self, config_id: str, name: str, text: str, *, kind: str = "BUNDLE") -> None:
        revisions = self.configs.setdefault(config_id, [])
        revisions.append(FetchedConfig(config_id, name, len(revisions) + 1, text, kind=kind))

    async def get(
        self, config_id: str, revision: int = 0, time_remaining: float | None = None
    ) -> FetchedConfig:
        self.reads.append(f"get:{config_id}")
        revisions = self.configs.get(config_id)
        if not revisions or revision > len(revisions):
            raise NotFound(f"no config {config_id}")
        return revisions[revision - 1] if revision else revisions[-1]

    async def get_by_name(self, name: str, time_remaining: float | None = None) -> FetchedConfig:
        self.reads.append(f"name:{name}")
        for revisions in self.configs.values():
            if revisions[-1].name == name:
                return revisions[-1]
        raise NotFound(f"no config named {name}")

    async def find(
        self, filter_text: str, time_remaining: float | None = None, limit: int = 100
    ) -> list[FetchedConfig]:
        self.reads.append(f"find:{filter_text}")
        return []


@pytest.fixture
def source() -> MemorySource:
    return MemorySource()


def _preparer(source: MemorySource, state: WatchState, tmp_path: Path) -> Preparer:
    return Preparer(
        source,
        PreparedCache(8),
        REGISTRY,
        BundleEnvironment({}),
        state,
        reach=ModuleReach(Sandbox(tmp_path), EgressPolicy("")),
    )


BASE = "bundle:\n  name: base\nproviders:\n  - module: provider-echo\n    config: {priority: 5}\n"
APP = (
    "---\nbundle:\n  name: app\nincludes: [base]\n"
    "tools:\n  - module: tool-filesystem\n    config: {unknown_key: 1}\n---\nYou help.\n"
)


async def test_a_revision_is_composed_once_then_served_from_the_cache(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put("base", "base", BASE)
    source.put("app", "app", APP)
    state = WatchState()
    state.up()
    preparer = _preparer(source, state, tmp_path)
    first = await preparer.prepare("t", "app", 0, None)
    assert first.composed_from == ("config:base", "config:app")
    assert first.instruction == "You help."
    assert first.default_provider == "provider-echo"
    assert [w.field for w in first.warnings] == ["tools[0].config.unknown_key"]
    source.reads.clear()
    again = await preparer.prepare("t", "app", 0, None)
    assert again is first
    # Only the latest revision is asked for; nothing is fetched or composed again.
    assert source.reads == ["get:app"]


async def test_a_change_to_an_included_config_invalidates_what_was_built_on_it(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put("base", "base", BASE)
    source.put("app", "app", APP)
    state = WatchState()
    state.up()
    preparer = _preparer(source, state, tmp_path)
    first = await preparer.prepare("t", "app", 0, None)
    source.put("base", "base", BASE.replace("priority: 5", "priority: 1"))
    preparer.forget("base", "base")
    second = await preparer.prepare("t", "app", 0, None)
    assert second is not first
    assert second.included_revisions["base"] == ("base", 2)


async def test_without_the_change_stream_a_cached_bundle_is_revalidated(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put("base", "base", BASE)
    source.put("app", "app", APP)
    state = WatchState()  # down: nobody tells the cache about changes
    preparer = _preparer(source, state, tmp_path)
    first = await preparer.prepare("t", "app", 0, None)
    source.put("base", "base", BASE + "# changed\n")
    second = await preparer.prepare("t", "app", 0, None)
    assert second is not first
    assert second.included_revisions["base"] == ("base", 2)


async def test_every_problem_is_reported_located(source: MemorySource, tmp_path: Path) -> None:
    source.put(
        "bad",
        "bad",
        "bundle:\n  name: bad\nincludes: [nowhere, 'acme:behaviors/missing']\n"
        "tools:\n  - module: tool-filesystem\n    config: {allowed_paths: ['/etc']}\n"
        "  - module: tool-unknown\n",
    )
    preparer = _preparer(source, WatchState(), tmp_path)
    with pytest.raises(PreparationFailed) as failed:
        await preparer.prepare("t", "bad", 0, None)
    found = {(v.type, v.subject) for v in failed.value.violations}
    assert found == {
        ("INCLUDE_NOT_FOUND", "config:bad: includes[0]"),
        ("INCLUDE_NOT_FOUND", "config:bad: includes[1]"),
        ("TOOL_PATH_NOT_ALLOWED", "tools[0].config.allowed_paths"),
        ("MODULE_NOT_INSTALLED", "config:bad: tools[1]"),
    }


async def test_shipped_bundles_are_found_in_the_tandem_namespace_only(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put(
        "app",
        "app",
        "bundle:\n  name: app\nincludes: ['tandem:dev']\nproviders:\n  - module: provider-echo\n",
    )
    preparer = _preparer(source, WatchState(), tmp_path)
    prepared = await preparer.prepare("t", "app", 0, None)
    assert prepared.composed_from == ("bundle:tandem:dev", "config:app")
    # The shipped name is never looked up among the tenant's configs.
    assert not [r for r in source.reads if "tandem" in r]


# --- session overrides --------------------------------------------------------------------

ECHO_APP = (
    "bundle:\n  name: app\nproviders:\n  - module: provider-echo\n"
    "    config: {default_model: m-a}\ntools:\n  - module: tool-filesystem\n"
)
OVERRIDES = (
    "providers:\n  - module: provider-echo\n    config: {default_model: m-b}\n"
    "remove:\n  tools: [tool-filesystem]\n"
    "context:\n  include: ['acme:context/style.md']\n"
)


def _models(bundle: PreparedBundle) -> list[object]:
    return [m.config.get("default_model") for m in bundle.modules if m.kind == "provider"]


def _tools(bundle: PreparedBundle) -> list[str]:
    return [m.module for m in bundle.modules if m.kind == "tool"]


async def test_overrides_compose_last_and_each_variant_is_cached_once(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put("app", "app", ECHO_APP)
    source.put("style", "acme:context/style.md", "Be brief.")
    state = WatchState()
    state.up()
    cache = PreparedCache(8)
    preparer = Preparer(source, cache, REGISTRY, BundleEnvironment({}), state)
    plain = await preparer.prepare("t", "app", 0, None)
    overridden = await preparer.prepare("t", "app", 0, None, overrides=OVERRIDES)
    assert (_models(overridden), _tools(overridden)) == (["m-b"], [])
    assert [c.name for c in overridden.context] == ["acme:context/style.md"]
    assert overridden.composed_from == ("config:app", "overrides")
    # The plain bundle is another entry, untouched by the variant.
    assert (_models(plain), _tools(plain)) == (["m-a"], ["tool-filesystem"])
    # The same overrides, written differently, are the same entry; none is the plain one.
    rewritten = "# the same, reordered\n" + OVERRIDES.replace("remove:", "\nremove:")
    assert await preparer.prepare("t", "app", 0, None, overrides=rewritten) is overridden
    assert await preparer.prepare("t", "app", 0, None, overrides="  \n") is plain
    other = await preparer.prepare("t", "app", 0, None, overrides=OVERRIDES.replace("m-b", "m-c"))
    assert _models(other) == ["m-c"]
    assert cache.stats().size == 3
    # A change to the config drops every variant of it; one to the context file, those using it.
    preparer.forget("style", "acme:context/style.md")
    assert cache.stats().size == 1
    preparer.forget("app", "app")
    assert cache.stats().size == 0


async def test_concurrent_preparations_of_the_same_overrides_build_once(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put("app", "app", ECHO_APP)
    source.put("style", "acme:context/style.md", "Be brief.")
    state = WatchState()
    state.up()
    preparer = _preparer(source, state, tmp_path)
    first, second = await asyncio.gather(
        preparer.prepare("t", "app", 0, None, overrides=OVERRIDES),
        preparer.prepare("t", "app", 0, None, overrides="# same\n" + OVERRIDES),
    )
    assert first is second
    assert source.reads.count("name:acme:context/style.md") == 1


async def test_problems_the_overrides_cause_are_invalid_argument_located_in_them(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put("app", "app", ECHO_APP)
    preparer = _preparer(source, WatchState(), tmp_path)
    fragment = (
        "tools:\n  - module: tool-unknown\n"
        "  - module: tool-filesystem\n    config: {allowed_paths: ['/etc']}\n"
        "providers:\n  - module: provider-echo\n    config: {api_key: '${NOT_ALLOWED}'}\n"
        "context:\n  include: ['acme:context/missing.md']\n"
    )
    with pytest.raises(InvalidOverrides) as refused:
        await preparer.prepare("t", "app", 0, None, overrides=fragment)
    found = {(v.field, v.line, v.description.split(":")[0]) for v in refused.value.violations}
    assert found == {
        ("overrides.tools[0].module", 2, "MODULE_NOT_INSTALLED"),
        ("overrides.tools[1].config.allowed_paths", 4, "TOOL_PATH_NOT_ALLOWED"),
        ("overrides.providers[0].config.api_key", 7, "ENV_NOT_AVAILABLE"),
        ("overrides.context.include[0]", 9, "CONTEXT_NOT_FOUND"),
    }


async def test_a_config_that_fails_on_its_own_still_fails_as_the_configs_problem(
    source: MemorySource, tmp_path: Path
) -> None:
    source.put("bad", "bad", "bundle:\n  name: bad\ntools:\n  - module: tool-unknown\n")
    preparer = _preparer(source, WatchState(), tmp_path)
    fragment = "providers:\n  - module: provider-echo\n"
    with pytest.raises(PreparationFailed) as failed:
        await preparer.prepare("t", "bad", 0, None, overrides=fragment)
    assert {(v.type, v.subject) for v in failed.value.violations} == {
        ("MODULE_NOT_INSTALLED", "config:bad: tools[0]")
    }
