"""tool-todo refuses what a hostile model could send it, and keeps the list it had."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from session_service.modules.todo import MAX_TEXT_CHARS, MAX_TODOS, TodoTool
from session_service.workspace import Sandbox

ITEM = {"content": "Do it", "activeForm": "Doing it", "status": "pending"}


@pytest.mark.parametrize(
    ("todos", "problem"),
    [
        ([ITEM] * (MAX_TODOS + 1), f"at most {MAX_TODOS} items"),
        ([{**ITEM, "content": "x" * (MAX_TEXT_CHARS + 1)}], "longer than"),
        ([{**ITEM, "content": 3}], "must be strings"),
        ("not a list", "must be a list"),
        ([["content", "status"]], "missing required fields"),
    ],
)
async def test_bad_lists_are_refused_and_the_stored_one_kept(
    tmp_path: Path, todos: Any, problem: str
) -> None:
    tool = TodoTool({}, Sandbox(tmp_path / "ws", state=tmp_path / "state"))
    (tmp_path / "state").mkdir()
    assert not (await tool.call("todo", {"action": "create", "todos": [ITEM]})).is_error
    refused = await tool.call("todo", {"action": "update", "todos": todos})
    assert refused.is_error
    assert problem in refused.content
    listed = await tool.call("todo", {"action": "list"})
    assert json.loads(listed.content)["todos"] == [ITEM]


async def test_a_corrupt_state_file_reads_as_an_empty_list(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "todo.json").write_text("{not json")
    tool = TodoTool({}, Sandbox(tmp_path / "ws", state=state))
    listed = await tool.call("todo", {"action": "list"})
    assert json.loads(listed.content) == {"status": "listed", "count": 0, "todos": []}
