"""Composition by the Amplifier rules, one test per rule, on real-shaped bundles."""

from __future__ import annotations

from typing import Any

from session_service.prepare.compose import merge_bundles
from session_service.prepare.preparer import default_provider

FOUNDATION_LIKE = {
    "bundle": {"name": "foundation", "version": "1.0.0"},
    "session": {
        "orchestrator": {"module": "loop-streaming", "config": {"max_iterations": 4}},
        "context": {"module": "context-simple", "config": {"max_tokens": 100000}},
    },
    "providers": [
        {"module": "provider-anthropic", "config": {"default_model": "claude", "priority": 5}}
    ],
    "tools": [{"module": "tool-filesystem", "config": {"allowed_write_paths": ["."]}}],
    "hooks": [{"module": "hooks-logging", "config": {"log_level": "INFO"}}],
    "agents": {
        "include": ["foundation:zen-architect", "foundation:bug-hunter"],
        "explorer": {"description": "from foundation"},
    },
    "context": {"include": ["foundation:context/shared.md", "foundation:context/style.md"]},
    "spawn": {"exclude_tools": ["tool-task"], "max_depth": 2},
}

APP = {
    "bundle": {"name": "app"},
    "session": {"orchestrator": {"config": {"max_iterations": 8}}},
    "providers": [
        {"module": "provider-openai", "config": {"default_model": "gpt", "priority": 1}},
        {"module": "provider-anthropic", "config": {"temperature": 0.2}},
    ],
    "tools": [{"module": "tool-filesystem", "config": {"allowed_read_paths": ["src"]}}],
    "hooks": [{"module": "hooks-logging", "id": "audit"}],
    "agents": {
        "include": ["app:reviewer", "foundation:bug-hunter"],
        "explorer": {"description": "from app"},
    },
    "context": {"include": ["app:context/team.md", "foundation:context/style.md"]},
    "spawn": {"max_depth": 3},
}


def _composed() -> dict[str, Any]:
    return merge_bundles(FOUNDATION_LIKE, APP)


def test_session_is_deep_merged_the_including_bundle_winning() -> None:
    session = _composed()["session"]
    assert session == {
        "orchestrator": {"module": "loop-streaming", "config": {"max_iterations": 8}},
        "context": {"module": "context-simple", "config": {"max_tokens": 100000}},
    }


def test_spawn_is_deep_merged() -> None:
    assert _composed()["spawn"] == {"exclude_tools": ["tool-task"], "max_depth": 3}


def test_modules_merge_by_module_with_config_deep_merged_and_new_ones_appended() -> None:
    composed = _composed()
    assert composed["providers"] == [
        {
            "module": "provider-anthropic",
            "config": {"default_model": "claude", "priority": 5, "temperature": 0.2},
        },
        {"module": "provider-openai", "config": {"default_model": "gpt", "priority": 1}},
    ]
    assert composed["tools"] == [
        {
            "module": "tool-filesystem",
            "config": {"allowed_write_paths": ["."], "allowed_read_paths": ["src"]},
        }
    ]


def test_modules_with_an_id_are_separate_entries() -> None:
    assert [(h.get("id"), h["module"]) for h in _composed()["hooks"]] == [
        (None, "hooks-logging"),
        ("audit", "hooks-logging"),
    ]


def test_agents_merge_by_name_and_includes_accumulate_once() -> None:
    assert _composed()["agents"] == {
        "include": ["foundation:zen-architect", "foundation:bug-hunter", "app:reviewer"],
        "explorer": {"description": "from app"},
    }


def test_context_includes_accumulate_in_order_each_once() -> None:
    assert _composed()["context"] == {
        "include": [
            "foundation:context/shared.md",
            "foundation:context/style.md",
            "app:context/team.md",
        ]
    }


def test_includes_never_survive_composition() -> None:
    assert "includes" not in merge_bundles({"includes": ["x"]}, {"includes": ["y"], "a": 1})


def test_the_default_provider_is_the_lowest_priority() -> None:
    composed = _composed()
    depths = {("providers", "provider-anthropic"): 0, ("providers", "provider-openai"): 0}
    assert default_provider(composed, depths) == ("provider-openai", "providers[1]")


def test_among_equal_priorities_the_outer_bundle_wins_over_what_it_included() -> None:
    included: dict[str, Any] = {"providers": [{"module": "provider-echo"}]}
    outer: dict[str, Any] = {"providers": [{"module": "provider-openai"}]}
    composed = merge_bundles(included, outer)
    depths = {("providers", "provider-echo"): 1, ("providers", "provider-openai"): 0}
    assert default_provider(composed, depths) == ("provider-openai", "providers[1]")
    # A lower priority in the included bundle still beats the outer one.
    included["providers"][0]["config"] = {"priority": 0}
    composed = merge_bundles(included, outer)
    assert default_provider(composed, depths) == ("provider-echo", "providers[0]")


def test_no_provider_is_none() -> None:
    assert default_provider({"tools": []}, {}) is None
