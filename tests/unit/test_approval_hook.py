"""Which tool calls hooks-approval holds for a person, and which its rules decide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from session_service.modules.approval import ApprovalHook, auto_action
from session_service.turns.protocols import HookResult
from session_service.workspace import Sandbox


async def verdict(config: dict[str, Any], name: str, **arguments: Any) -> HookResult | None:
    hook = ApprovalHook(config, Sandbox(Path("/nonexistent")))
    return await hook.on_event("tool_approval", {"name": name, "arguments": arguments})


async def test_listed_tools_and_argument_patterns() -> None:
    config = {
        "tools": {"write_file": {"arguments": {"path": "*.py"}}, "read_*": {}},
        "policy_driven_only": True,
        "default_timeout": 5,
    }
    held = await verdict(config, "write_file", path="app.py", content="x")
    assert held == HookResult(
        approval="required", reason="write_file needs approval", approval_timeout_seconds=5.0
    )
    assert await verdict(config, "write_file", path="notes.md") is None
    assert (await verdict(config, "read_file", path="x")) is not None
    # Only the listed tools: bash is not held when the policy alone decides.
    assert await verdict(config, "bash", command="rm -rf /") is None


async def test_without_a_policy_bash_and_risky_names_are_held() -> None:
    assert (await verdict({}, "bash", command="make")) is not None
    assert (await verdict({}, "write", path="x")) is not None
    assert await verdict({}, "read_file", path="x") is None
    # A tool listed as not needing approval is let through.
    assert await verdict({"tools": {"bash": {"require_approval": False}}}, "bash") is None


async def test_bash_rules_decide_simple_commands_only() -> None:
    rules = [
        {"pattern": "ls *", "action": "auto_approve"},
        {"pattern": "rm *", "action": "auto_deny"},
    ]
    assert await verdict({"rules": rules}, "bash", command="ls -la") is None
    denied = await verdict({"rules": rules}, "bash", command="rm -rf build")
    assert denied == HookResult(approval="deny", reason="Auto-denied by rule")
    # A command with shell control characters is never decided by a rule.
    chained = await verdict({"rules": rules}, "bash", command="ls; rm -rf /")
    assert chained is not None
    assert chained.approval == "required"
    assert auto_action((("echo *", "auto_approve"),), "echo $(id)") is None


@pytest.mark.parametrize(
    "config",
    [
        {"tools": "bash"},
        {"tools": {"bash": {"require_approval": "yes"}}},
        {"tools": {"bash": {"arguments": {"command": 3}}}},
        {"rules": [{"pattern": "* x", "action": "auto_approve"}]},
        {"rules": [{"pattern": "ls", "action": "maybe"}]},
        {"default_timeout": 0},
        {"default_action": "continue"},
        {"policy_driven_only": "true"},
    ],
)
def test_bad_settings_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        ApprovalHook(config, Sandbox(Path("/nonexistent")))
