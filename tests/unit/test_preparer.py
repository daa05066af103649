"""The Preparer and its cache against an in-memory config source: no network, no database."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from session_service.prepare.cache import PreparedCache
from session_service.prepare.egress import EgressPolicy
from session_service.prepare.environment import BundleEnvironment
from session_service.prepare.model import PreparationFailed
from session_service.prepare.modules import ModuleRegistry
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

    def put(self, config_id: str, name: str, text: str, **package: str) -> None:
        revisions = self.configs.setdefault(config_id, [])
        revisions.append(FetchedConfig(config_id, name, len(revisions) + 1, text, **package))

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
