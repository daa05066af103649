"""grep, glob and apply_patch through real turns, on both databases: the model's calls reach
the session's workspace, and what one tool writes the next one sees."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.modules import installed_with
from tests.support.pair import Stack, running_pair
from tests.support.rpc import detail, rpc_error
from tests.support.turns import Event, active_session, bundle, collect, kinds, send

MODULES = {
    "tool": {
        "tool-search": "session_service.modules.search:SearchTool",
        "tool-apply-patch": "session_service.modules.patch:ApplyPatchTool",
    }
}
# Every tool works in the session's own workspace (relative paths, default config).
TOOLS = [
    {"module": "tool-filesystem"},
    {"module": "tool-search"},
    {"module": "tool-apply-patch"},
]


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    """Both services over each database, with the search and patch modules installed."""
    async with running_pair(
        database_url, modules=installed_with(MODULES), config={"watch_poll_seconds": 0.5}
    ) as running:
        yield running


def _step(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def _completed(events: list[Event]) -> list[tuple[str, str, bool]]:
    started = {
        e.tool_call_started.tool_call_id: e.tool_call_started.name
        for e in events
        if e.HasField("tool_call_started")
    }
    return [
        (started[c.tool_call_id], c.result, c.is_error)
        for c in (e.tool_call_completed for e in events if e.HasField("tool_call_completed"))
    ]


async def test_grep_and_glob_find_what_an_earlier_call_wrote(stack: Stack) -> None:
    script = [
        _step("write_file", {"path": "shopping.txt", "content": "eggs\nmilk\nbread\n"}),
        _step("grep", {"pattern": "^mil", "output_mode": "content"}),
        _step("glob", {"pattern": "*.txt"}),
        _step("grep", {"pattern": "root:", "path": "../../.."}),
        {"reply": "Milk is on line 2."},
    ]
    session_id = await active_session(stack, bundle({"script": script}, tools=TOOLS))
    events = await collect(send(stack.sessions, session_id, "is milk on my list?"))
    assert kinds(events)[-1] == "turn_completed"
    [written, grepped, globbed, escaped] = _completed(events)
    assert written == ("write_file", "Wrote 16 bytes to shopping.txt.", False)
    assert grepped[::2] == ("grep", False)
    assert json.loads(grepped[1])["results"] == [
        {"file": "shopping.txt", "content": "milk", "line_number": 2}
    ]
    assert globbed[::2] == ("glob", False)
    assert [m["path"] for m in json.loads(globbed[1])["matches"]] == ["shopping.txt"]
    assert escaped[::2] == ("grep", True)
    assert "Access denied" in escaped[1]
    assert events[-1].turn_completed.message.content == "Milk is on line 2."


async def test_apply_patch_changes_a_file_that_a_later_read_shows(stack: Stack) -> None:
    patch = """*** Begin Patch
*** Update File: greet.py
@@ def greet():
-    return "hello"
+    return "hello, world"
*** Add File: docs/notes.md
+patched in a turn
*** End Patch"""
    broken = "--- a/greet.py\n+++ b/greet.py\n@@ -1,2 +1,2 @@\n-def missing():\n+def found():\n"
    script = [
        _step("write_file", {"path": "greet.py", "content": 'def greet():\n    return "hello"\n'}),
        _step("apply_patch", {"patch": patch}),
        _step("read_file", {"path": "greet.py"}),
        _step("apply_patch", {"patch": broken}),
        _step("read_file", {"path": "docs/notes.md"}),
        {"reply": "Patched."},
    ]
    session_id = await active_session(stack, bundle({"script": script}, tools=TOOLS))
    events = await collect(send(stack.sessions, session_id, "make it greet the world"))
    assert kinds(events)[-1] == "turn_completed"
    [_, patched, read, refused, notes] = _completed(events)
    assert patched == ("apply_patch", "M greet.py\nA docs/notes.md", False)
    assert read == ("read_file", 'def greet():\n    return "hello, world"\n', False)
    assert refused[::2] == ("apply_patch", True)
    assert "'greet.py': hunk 1" in refused[1]
    assert notes == ("read_file", "patched in a turn\n", False)
    assert events[-1].turn_completed.message.content == "Patched."


@pytest.mark.parametrize(
    ("module", "key"),
    [("tool-search", "allowed_paths"), ("tool-apply-patch", "allowed_write_paths")],
)
async def test_a_bundle_cannot_point_the_tools_at_the_host(
    stack: Stack, module: str, key: str
) -> None:
    tools = [{"module": module, "config": {key: ["/etc"]}}]
    error = await rpc_error(active_session(stack, bundle({}, tools=tools), "host"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert violation.type == "TOOL_PATH_NOT_ALLOWED"
    assert violation.subject == f"tools[0].config.{key}"
