"""Pauses a turn before a tool call that needs a person's approval (`hooks-approval`).

When a model response asks for such a call, the turn writes ApprovalRequested (tool call
id, name, arguments) and pauses: it holds no worker and no lease, survives replica restarts,
and resumes on whichever replica receives the last DecideApproval. A denial reaches the
model as a tool error with its reason; so does a timeout.

Config keys (Amplifier's names):
- `tools`: which tools need approval. A mapping of tool name (or glob) to
  `{require_approval: bool, arguments: {NAME: GLOB, ...}}`; with `arguments`, only calls
  whose named arguments all match their globs need it. A list of tool names (or globs) is
  short for `require_approval: true` on each.
- `rules`: `[{pattern, action}]` for bash commands: `auto_approve` or `auto_deny` a simple
  command (no shell control characters) that matches pattern, where `*` is the only wildcard
  and the executable must be spelled out.
- `default_timeout`: seconds an approval may wait; then it counts as denied (default: it
  waits until someone decides, or the turn is cancelled).
- `default_action`: what a timeout means; only `deny` is supported.
- `policy_driven_only`: when true, only `tools` decides; otherwise bash calls always need
  approval (unless a rule decides), as do tools named write, edit, execute or run.
`audit` is not read: every request and decision is in the session's event log.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from session_service.turns.protocols import HookResult
from session_service.workspace import Sandbox

HIGH_RISK_TOOLS = frozenset({"write", "edit", "bash", "execute", "run"})
_SHELL_CONTROL = frozenset(";&|<>\r\n`$()\\")
_ACTIONS = ("auto_approve", "auto_deny")


@dataclass(frozen=True)
class _ToolRule:
    pattern: str
    required: bool
    arguments: Mapping[str, str]

    def matches(self, name: str, arguments: Mapping[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(name, self.pattern):
            return False
        return all(
            fnmatch.fnmatchcase(_text(arguments.get(key)), glob)
            for key, glob in self.arguments.items()
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _tool_rules(value: Any) -> tuple[_ToolRule, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        if not all(isinstance(item, str) and item for item in value):
            raise ValueError("tools must list tool names")
        return tuple(_ToolRule(item, True, {}) for item in value)
    if not isinstance(value, Mapping):
        raise ValueError("tools must be a list of tool names or a mapping of name to settings")
    rules = []
    for name, settings in value.items():
        if not isinstance(settings, Mapping):
            raise ValueError(f"tools.{name} must be a mapping")
        required = settings.get("require_approval", True)
        arguments = settings.get("arguments") or {}
        if not isinstance(required, bool):
            raise ValueError(f"tools.{name}.require_approval must be true or false")
        if not isinstance(arguments, Mapping) or not all(
            isinstance(glob, str) for glob in arguments.values()
        ):
            raise ValueError(f"tools.{name}.arguments must map argument names to patterns")
        rules.append(_ToolRule(str(name), required, {str(k): v for k, v in arguments.items()}))
    return tuple(rules)


def _command_rules(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("rules must be a list of {pattern, action}")
    rules = []
    for index, rule in enumerate(value):
        if not isinstance(rule, Mapping):
            raise ValueError(f"rules[{index}] must be a mapping")
        pattern, action = rule.get("pattern"), rule.get("action")
        if not isinstance(pattern, str) or not pattern.strip() or action not in _ACTIONS:
            raise ValueError(
                f"rules[{index}] needs a pattern and an action ({' or '.join(_ACTIONS)})"
            )
        # The executable must be spelled out: `* foo` would approve anything.
        if "*" in pattern.split(maxsplit=1)[0]:
            raise ValueError(f"rules[{index}].pattern must name its command without wildcards")
        rules.append((pattern, str(action)))
    return tuple(rules)


def auto_action(rules: tuple[tuple[str, str], ...], command: str) -> str | None:
    """The action of the first rule a simple bash command matches (None: no rule)."""
    if not command.strip() or any(char in _SHELL_CONTROL for char in command):
        return None
    for pattern, action in rules:
        anchored = re.escape(pattern).replace(r"\*", ".*")
        if re.fullmatch(anchored, command, re.IGNORECASE) is not None:
            return action
    return None


class ApprovalHook:
    """Decides which tool calls wait for a person, before they run."""

    CONFIG_KEYS: frozenset[str] = frozenset(
        {"tools", "rules", "default_timeout", "default_action", "policy_driven_only"}
    )

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        del sandbox  # decisions are stored with the turn, not in files
        self._tools = _tool_rules(config.get("tools"))
        self._rules = _command_rules(config.get("rules"))
        timeout = config.get("default_timeout")
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise ValueError("default_timeout must be a positive number of seconds")
        self._timeout = float(timeout) if timeout is not None else None
        if config.get("default_action", "deny") != "deny":
            raise ValueError("default_action: only deny is supported (a timeout denies)")
        only = config.get("policy_driven_only", False)
        if not isinstance(only, bool):
            raise ValueError("policy_driven_only must be true or false")
        self._policy_only = only

    def _needs(self, name: str, arguments: Mapping[str, Any]) -> bool:
        for rule in self._tools:
            if fnmatch.fnmatchcase(name, rule.pattern):
                return rule.required and rule.matches(name, arguments)
        return not self._policy_only and (name == "bash" or name in HIGH_RISK_TOOLS)

    async def on_event(self, event: str, data: Mapping[str, Any]) -> HookResult | None:
        """At tool_approval: required, denied by a rule, or nothing to say."""
        if event != "tool_approval":
            return None
        name = str(data.get("name", ""))
        arguments = data.get("arguments")
        arguments = arguments if isinstance(arguments, Mapping) else {}
        if not self._needs(name, arguments):
            return None
        if name == "bash":
            action = auto_action(self._rules, _text(arguments.get("command")))
            if action == "auto_approve":
                return None
            if action == "auto_deny":
                return HookResult(approval="deny", reason="Auto-denied by rule")
        return HookResult(
            approval="required",
            reason=f"{name} needs approval",
            approval_timeout_seconds=self._timeout,
        )
