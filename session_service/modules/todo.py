"""The model's own todo list (`tool-todo`) and the reminder that keeps it in view
(`hooks-todo-reminder`).

The list belongs to the session: it is kept in the session's state folder (outside the
workspace, so no file tool can reach or forge it), survives replica restarts with the
session's files, and is removed with the session.

tool-todo reads no config keys. hooks-todo-reminder reads (Amplifier's names):
- `inject_role`: accepted for compatibility; the reminder always travels with the next model
  call only, appended to the last tool result or as a user message.
- `priority`: accepted for compatibility; hooks run in bundle order.
- `recent_tool_threshold`: how many recent tool calls are remembered to tell whether the
  todo tool was used lately (default 3). When it was not, the reminder nudges the model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from session_service.turns.protocols import HookResult, ToolResult, ToolSpec
from session_service.workspace import Sandbox

TOOL_NAME = "todo"
STATUSES = ("pending", "in_progress", "completed")
# A list the model keeps for itself: large enough for any plan, small enough for a prompt.
MAX_TODOS = 200
MAX_TEXT_CHARS = 2000
_FILE = "todo.json"

DESCRIPTION = """Manage your todo list for tracking complex multi-step tasks.

Use this tool to:
- Create a todo list when starting complex multi-step work
- Update the list as you complete each step
- Stay accountable and focused through long turns

Todo items have:
- content: Imperative description (e.g., "Run tests", "Build project")
- activeForm: Present continuous (e.g., "Running tests", "Building project")
- status: "pending" | "in_progress" | "completed"

Recommended pattern:
1. Create list when you start complex multi-step work
2. Update after completing each step
3. Keep exactly ONE item as "in_progress" at a time
4. Mark items "completed" immediately after finishing"""

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "action": {
            "type": "string",
            "enum": ["create", "update", "list"],
            "description": "Action to perform: create (replace all), update (replace all),"
            " list (read current)",
        },
        "todos": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "content": {
                        "type": "string",
                        "description": "Imperative description: 'Run tests', 'Build project'",
                    },
                    "activeForm": {
                        "type": "string",
                        "description": "Present continuous: 'Running tests', 'Building project'",
                    },
                    "status": {
                        "type": "string",
                        "enum": list(STATUSES),
                        "description": "Current status of this todo item",
                    },
                },
                "required": ["content", "status", "activeForm"],
            },
            "description": "List of todos (required for create/update, ignored for list)",
        },
    },
    "required": ["action"],
}


class TodoStore:
    """The session's todo list, as a JSON file in its state folder."""

    def __init__(self, sandbox: Sandbox) -> None:
        if sandbox.state is None:
            raise ValueError("the todo list needs a session (no state folder was given)")
        self._path = sandbox.state / _FILE

    def load(self) -> list[dict[str, str]]:
        """The stored list; empty when there is none or it cannot be read."""
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [item for item in data if isinstance(item, dict)]

    def save(self, todos: Sequence[Mapping[str, str]]) -> None:
        """Replaces the list; a crash mid-write leaves the old one, never half of the new."""
        folder = self._path.parent
        handle, temporary = tempfile.mkstemp(prefix=".todo-", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(list(todos), file, ensure_ascii=False)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _checked(todos: Any) -> list[dict[str, str]] | str:
    """The todos as stored, or what is wrong with them."""
    if todos is None:
        todos = []
    if not isinstance(todos, list):
        return "todos must be a list"
    if len(todos) > MAX_TODOS:
        return f"a todo list holds at most {MAX_TODOS} items (got {len(todos)})"
    checked: list[dict[str, str]] = []
    for index, todo in enumerate(todos):
        if not isinstance(todo, Mapping) or not all(
            key in todo for key in ("content", "status", "activeForm")
        ):
            return f"Todo {index} missing required fields (content, status, activeForm)"
        if todo["status"] not in STATUSES:
            return f"Todo {index} has invalid status: {todo['status']}"
        content, active = todo["content"], todo["activeForm"]
        if not isinstance(content, str) or not isinstance(active, str):
            return f"Todo {index}: content and activeForm must be strings"
        if len(content) > MAX_TEXT_CHARS or len(active) > MAX_TEXT_CHARS:
            return f"Todo {index} is longer than {MAX_TEXT_CHARS} characters"
        checked.append({"content": content, "activeForm": active, "status": todo["status"]})
    return checked


def _counts(todos: Sequence[Mapping[str, str]]) -> dict[str, int]:
    return {status: sum(1 for t in todos if t["status"] == status) for status in STATUSES}


class TodoTool:
    """Offers `todo`: create, update (both replace the list) and list."""

    CONFIG_KEYS: frozenset[str] = frozenset()

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        del config  # nothing to configure
        self._store = TodoStore(sandbox)

    def specs(self) -> Sequence[ToolSpec]:
        """The todo tool."""
        return (ToolSpec(TOOL_NAME, DESCRIPTION, SCHEMA),)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs one action; the reply is JSON, as the model expects from this tool."""
        action = arguments.get("action")
        if action == "list":
            todos = self._store.load()
            return _reply({"status": "listed", "count": len(todos), "todos": todos})
        if action not in ("create", "update"):
            return ToolResult(
                f"Unknown action: {action}. Valid actions: create, update, list", is_error=True
            )
        checked = _checked(arguments.get("todos"))
        if isinstance(checked, str):
            return ToolResult(checked, is_error=True)
        self._store.save(checked)
        if action == "create":
            return _reply({"status": "created", "count": len(checked), "todos": checked})
        return _reply({"status": "updated", "count": len(checked), **_counts(checked)})


def _reply(output: Mapping[str, Any]) -> ToolResult:
    return ToolResult(json.dumps(output, ensure_ascii=False))


_SYMBOLS = {"completed": "✓", "in_progress": "→", "pending": "☐"}
_NUDGE = (
    "The todo tool hasn't been used recently. If you're working on tasks that would benefit "
    "from tracking progress, consider using the todo tool to track progress. Also consider "
    "cleaning up the todo list if it has become stale and no longer matches what you are "
    "working on. Only use it if it's relevant to the current work. This is just a gentle "
    "reminder - ignore if not applicable. Make sure that you NEVER mention this reminder to "
    "the user."
)
_SILENT = "DO NOT mention this reminder to the user. Process this silently and continue your work."


def format_todos(todos: Sequence[Mapping[str, str]]) -> str:
    """One line per todo: ✓ done, → in progress (its activeForm), ☐ pending."""
    lines = []
    for todo in todos:
        status = todo.get("status", "pending")
        text = todo.get("activeForm" if status == "in_progress" else "content", "")
        lines.append(f"{_SYMBOLS.get(status, '☐')} {text}")
    return "\n".join(lines)


class TodoReminderHook:
    """Before each model call, reminds the model of its todo list (and of the tool)."""

    CONFIG_KEYS: frozenset[str] = frozenset({"inject_role", "priority", "recent_tool_threshold"})

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        threshold = config.get("recent_tool_threshold", 3)
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise ValueError("recent_tool_threshold must be a positive integer")
        role = config.get("inject_role", "user")
        if role not in ("user", "system"):
            raise ValueError("inject_role must be 'user' or 'system'")
        self._store = TodoStore(sandbox)
        self._recent: deque[str] = deque(maxlen=threshold)

    async def on_event(self, event: str, data: Mapping[str, Any]) -> HookResult | None:
        """Tracks tool calls; before a model call, returns the reminder to inject."""
        if event == "tool_call_end":
            self._recent.append(str(data.get("name", "")))
            return None
        if event != "provider_request":
            return None
        parts: list[str] = []
        if TOOL_NAME not in self._recent:
            parts.append(_NUDGE)
        todos = self._store.load()
        if todos:
            if parts:
                parts.append("\nHere are the existing contents of your todo list:")
            parts.append(format_todos(todos))
        if not parts:
            return None
        body = "\n".join(parts)
        return HookResult(
            f'<system-reminder source="hooks-todo-reminder">\n{body}\n\n{_SILENT}\n'
            "</system-reminder>"
        )
