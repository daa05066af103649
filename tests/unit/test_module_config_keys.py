"""Every built-in module declares exactly the config keys it reads (its CONFIG_KEYS).

Preparation turns any other key into a located WARNING, so a key missing from a set would be
reported as ignored while the module reads it, and a key in the set that nothing reads would
be dropped without a word. Each module is built from a config that records which keys it
looks at.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from session_service.prepare.egress import EgressPolicy
from session_service.prepare.modules import GROUPS, load_factory
from session_service.tool_policy import BashPolicy, ToolPolicy
from session_service.turns.protocols import AgentInfo, AgentRefused, AgentRun, ChatMessage
from session_service.workspace import Sandbox

# The modules this distribution registers, by name: (kind, implementation).
BUILT_IN: dict[str, tuple[str, str]] = {
    ep.name: (kind, ep.value)
    for kind, group in GROUPS.items()
    for ep in entry_points(group=group)
    if ep.value.startswith("session_service.modules.")
}

# A valid value for every key each module declares. Aliases get agreeing values, so both
# names are read.
SAMPLES: dict[str, dict[str, Any]] = {
    "provider-echo": {
        "default_model": "echo-test",
        "model": "echo-test",
        "base_url": "https://api.openai.com/v1",
        "api_key": "sk-test",
        "priority": 1,
        "temperature": 0.5,
        "max_tokens": 100,
        "reply": "hi",
        "delay_ms": 0,
        "script": [{"reply": "scripted"}],
    },
    "provider-openai": {
        "default_model": "gpt-test",
        "model": "gpt-test",
        "base_url": "https://api.openai.com/v1",
        "api_key": "sk-test",
        "priority": 1,
        "temperature": 0.5,
        "max_tokens": 100,
        "timeout": 30,
        "timeout_seconds": 30,
        "max_retries": 1,
    },
    "provider-anthropic": {
        "default_model": "claude-test",
        "model": "claude-test",
        "base_url": "https://api.anthropic.com",
        "api_key": "sk-ant-test",
        "priority": 1,
        "temperature": 0.5,
        "max_tokens": 100,
        "timeout": 30,
        "timeout_seconds": 30,
        "max_retries": 1,
    },
    "tool-filesystem": {
        "allowed_read_paths": ["."],
        "allowed_paths": ["."],
        "allowed_write_paths": ["."],
        "max_read_bytes": 1024,
    },
    "loop-basic": {"max_iterations": 3, "tool_timeout_seconds": 5},
    "loop-streaming": {"max_iterations": 3, "tool_timeout_seconds": 5},
    "context-simple": {
        "max_messages": 50,
        "max_tokens": 8000,
        "compact_threshold": 0.8,
        "auto_compact": True,
    },
    "hooks-logging": {"log_level": "DEBUG"},
    "tool-todo": {},
    "hooks-todo-reminder": {"inject_role": "user", "priority": 10, "recent_tool_threshold": 2},
    "hooks-todo-display": {},
    "hooks-streaming-ui": {},
    "tool-web": {
        "timeout": 10,
        "search_timeout": 5,
        "max_bytes": 1024,
        "default_limit": 1024,
        "max_results": 5,
        "extract_text": True,
        "allowed_domains": ["example.org"],
        "blocked_domains": ["example.net"],
    },
    "tool-bash": {"timeout": 10, "max_output_bytes": 1024},
    "tool-skills": {"skills": ["acme"], "_tandem_skills": []},
    "tool-search": {
        "allowed_paths": ["."],
        "max_results": 100,
        "default_limits": {"content": 50},
        "max_file_size": 1024,
        "max_files": 100,
        "max_bytes_scanned": 4096,
        "exclusions": ["node_modules"],
        "regex_timeout_seconds": 1.5,
    },
    "tool-apply-patch": {"allowed_write_paths": ["."], "denied_write_paths": ["secrets"]},
    "tool-delegate": {
        "features": {"self_delegation": {"enabled": False}},
        "settings": {"exclude_tools": ["delegate"], "timeout": 60},
    },
    "tool-task": {},
    "hooks-session-naming": {"initial_trigger_turn": 2, "max_name_length": 40},
    "hooks-approval": {
        "tools": {"write_file": {"require_approval": True}},
        "rules": [{"pattern": "ls *", "action": "auto_approve"}],
        "default_timeout": 30,
        "default_action": "deny",
        "policy_driven_only": True,
    },
}

# Keys a module accepts on purpose without reading them itself.
ACCEPTED_UNREAD: dict[str, frozenset[str]] = {
    # Preparation reads priority to pick the default provider.
    "provider-openai": frozenset({"priority"}),
    "provider-anthropic": frozenset({"priority"}),
    # Echo stands in for any provider, so it takes their keys and connects nowhere.
    "provider-echo": frozenset({"priority", "base_url", "api_key"}),
    # Hooks run in bundle order; the key is taken so Amplifier bundles need no edit.
    "hooks-todo-reminder": frozenset({"priority"}),
    # Preparation reads it (which packages' skills to hand over), not the tool.
    "tool-skills": frozenset({"skills"}),
}

# What the config must hold besides the key under test.
REQUIRED: dict[str, dict[str, Any]] = {
    "provider-openai": {"default_model": "gpt-test"},
    "provider-anthropic": {"default_model": "claude-test", "api_key": "sk-ant-test"},
}

# Keys Amplifier's modules of the same names read and Tandem's do not: a WARNING, never read.
AMPLIFIER_ONLY: dict[str, frozenset[str]] = {
    "provider-echo": frozenset({"reasoning"}),
    "provider-openai": frozenset({"reasoning", "truncation", "enable_state", "debug"}),
    "provider-anthropic": frozenset({"extended_thinking", "thinking_budget_tokens", "debug"}),
    "tool-filesystem": frozenset({"require_approval", "working_dir"}),
    "loop-basic": frozenset({"timeout"}),
    "loop-streaming": frozenset({"timeout", "buffer_size"}),
    "context-simple": frozenset({"storage_path"}),
    "hooks-logging": frozenset({"output_dir", "mode"}),
    "tool-web": frozenset({"search_engine", "working_dir"}),
    "tool-skills": frozenset({"skills_dirs", "skills_dir"}),
    "tool-search": frozenset({"working_dir", "timeout"}),
    "tool-apply-patch": frozenset({"working_dir", "engine"}),
    "tool-task": frozenset({"max_recursion_depth"}),
    "hooks-session-naming": frozenset(
        {"update_interval_turns", "max_description_length", "max_retries", "model_role"}
    ),
    "hooks-approval": frozenset({"audit"}),
}


class Recording(Mapping[str, Any]):
    """A config that remembers every key looked up in it."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        # A module that lists its config could read anything: say so instead of guessing.
        raise AssertionError("a module must read its config by key, not list it")

    def __len__(self) -> int:
        return len(self._data)


def scope(kind: str, tmp_path: Path) -> tuple[Any, ...]:
    """What a module of this kind is built with besides its config."""
    if kind in ("tool", "hook"):
        return (sandbox(tmp_path),)
    return ()


def sandbox(tmp_path: Path) -> Sandbox:
    """A session sandbox on a server that enables every tool (tool-bash is off by default)."""
    policy = ToolPolicy(bash=BashPolicy(enabled=True))
    return Sandbox(tmp_path.resolve(), policy=policy, state=tmp_path.resolve())


class NoAgents:
    """An AgentHost with no agents: constructing an agent tool reads only its config."""

    agents: Sequence[AgentInfo] = ()

    def transcript(self) -> Sequence[ChatMessage]:
        return ()

    async def run(self, agent: str, instruction: str, *, session_id: str = "") -> AgentRun:
        raise AgentRefused("no agents here")


async def build(name: str, config: Mapping[str, Any], tmp_path: Path) -> None:
    """Builds the module from config, then releases what it opened."""
    kind, implementation = BUILT_IN[name]
    factory = load_factory(implementation)
    # Agent tools are handed the turn's agents as well.
    extra = {"agents": NoAgents()} if getattr(factory, "AGENTS", False) else {}
    module = factory(config, *scope(kind, tmp_path), **extra)
    close = getattr(module, "aclose", None)
    if close is not None:
        await close()


def declared(name: str) -> frozenset[str]:
    keys = load_factory(BUILT_IN[name][1]).CONFIG_KEYS
    assert isinstance(keys, frozenset)
    assert all(isinstance(key, str) for key in keys)
    return keys


def test_every_built_in_module_is_covered() -> None:
    assert set(BUILT_IN) == {
        "provider-echo",
        "provider-openai",
        "provider-anthropic",
        "tool-filesystem",
        "loop-basic",
        "loop-streaming",
        "context-simple",
        "hooks-logging",
        "tool-todo",
        "hooks-todo-reminder",
        "hooks-todo-display",
        "hooks-streaming-ui",
        "tool-web",
        "tool-bash",
        "tool-skills",
        "tool-search",
        "tool-apply-patch",
        "tool-delegate",
        "tool-task",
        "hooks-session-naming",
        "hooks-approval",
    }
    assert set(SAMPLES) == set(BUILT_IN)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_sample_sets_every_declared_key(name: str) -> None:
    assert set(SAMPLES[name]) == declared(name)


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_every_declared_key_is_read_or_accepted_on_purpose(name: str, tmp_path: Path) -> None:
    config = Recording(SAMPLES[name])
    await build(name, config, tmp_path)
    unread = ACCEPTED_UNREAD.get(name, frozenset())
    assert config.read == declared(name) - unread
    assert unread <= declared(name)


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_with_defaults_only_declared_keys_are_read(name: str, tmp_path: Path) -> None:
    config = Recording(REQUIRED.get(name, {}))
    await build(name, config, tmp_path)
    assert config.read <= declared(name)


@pytest.mark.parametrize(
    ("name", "key"), [(name, key) for name in sorted(SAMPLES) for key in sorted(SAMPLES[name])]
)
async def test_each_declared_key_is_accepted_alone(name: str, key: str, tmp_path: Path) -> None:
    config = Recording({**REQUIRED.get(name, {}), key: SAMPLES[name][key]})
    await build(name, config, tmp_path)
    assert key in config.read or key in ACCEPTED_UNREAD.get(name, frozenset())


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_unknown_keys_are_what_the_set_leaves_out(name: str, tmp_path: Path) -> None:
    unknown = AMPLIFIER_ONLY.get(name, frozenset()) | {"not_a_key"}
    assert not unknown & declared(name)
    config = Recording({**SAMPLES[name], **dict.fromkeys(unknown, True)})
    # Accepted without a look: preparation is what reports them, located, as a WARNING.
    await build(name, config, tmp_path)
    assert not config.read & unknown


# The modules that check a bundle's settings before a session exists.
CHECKED = sorted(
    name for name, (_, impl) in BUILT_IN.items() if hasattr(load_factory(impl), "check_config")
)


def test_the_modules_that_reach_the_host_check_their_settings() -> None:
    assert CHECKED == [
        "provider-anthropic",
        "provider-openai",
        "tool-apply-patch",
        "tool-bash",
        "tool-filesystem",
        "tool-search",
        "tool-web",
    ]


@pytest.mark.parametrize("name", CHECKED)
def test_check_config_reads_only_declared_keys(name: str, tmp_path: Path) -> None:
    kind, implementation = BUILT_IN[name]
    check = load_factory(implementation).check_config
    reach: Any = sandbox(tmp_path) if kind == "tool" else EgressPolicy("*:*")
    config = Recording(SAMPLES[name])
    assert check(config, reach) == []
    assert config.read <= declared(name)
