"""Hook context reaches one model call: appended to a trailing tool result, else its own message."""

from __future__ import annotations

from session_service.modules.todo import format_todos
from session_service.turns.engine import with_injected_context
from session_service.turns.protocols import ChatMessage


def test_context_rides_on_a_trailing_tool_result() -> None:
    messages = [ChatMessage("user", "go"), ChatMessage("tool", "42", tool_call_id="c1")]
    injected = with_injected_context(messages, ["first", "second"])
    assert injected[:-1] == messages[:-1]
    assert injected[-1] == ChatMessage("tool", "42\n\nfirst\n\nsecond", tool_call_id="c1")
    # The conversation the turn keeps is untouched.
    assert messages[-1].content == "42"


def test_context_after_a_user_message_is_a_message_of_its_own() -> None:
    messages = [ChatMessage("user", "go")]
    assert with_injected_context(messages, ["note"]) == [
        ChatMessage("user", "go"),
        ChatMessage("user", "note"),
    ]
    assert with_injected_context([], ["note"]) == [ChatMessage("user", "note")]


def test_todos_are_drawn_by_status() -> None:
    todos = [
        {"content": "Plan", "activeForm": "Planning", "status": "completed"},
        {"content": "Build", "activeForm": "Building", "status": "in_progress"},
        {"content": "Ship", "activeForm": "Shipping", "status": "pending"},
    ]
    assert format_todos(todos) == "✓ Plan\n→ Building\n☐ Ship"
