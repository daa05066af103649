"""context-simple: the system prompt and the messages a provider receives."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from session_service.modules.contexts import SimpleContext
from session_service.turns.protocols import ChatMessage, ToolCallRequest, TurnContext


def _call(call_id: str) -> ChatMessage:
    return ChatMessage("assistant", "", tool_calls=(ToolCallRequest(call_id, "read_file", "{}"),))


def _result(call_id: str) -> ChatMessage:
    return ChatMessage("tool", "ok", tool_call_id=call_id)


def _contents(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    return [(m.role, m.content or m.tool_call_id) for m in messages]


def test_system_is_the_instruction_and_messages_the_transcript() -> None:
    transcript = [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]
    system, messages = SimpleContext({}).build(TurnContext("Be brief.", transcript))
    assert system == "Be brief."
    assert list(messages) == transcript


def test_turn_context_is_appended_with_sorted_keys_and_json_values() -> None:
    turn_context = {"user": "ada", "limits": {"b": 2, "a": 1}, "count": 3, "flag": True}
    system, _ = SimpleContext({}).build(TurnContext("Be brief.", [], turn_context))
    assert system == (
        "Be brief.\n\n## Context for this turn\n"
        '- count: 3\n- flag: true\n- limits: {"a": 1, "b": 2}\n- user: ada'
    )


def test_turn_context_without_an_instruction_has_no_leading_blank_lines() -> None:
    system, _ = SimpleContext({}).build(TurnContext("", [], {"k": "v"}))
    assert system == "## Context for this turn\n- k: v"


def test_max_messages_keeps_the_last_messages() -> None:
    transcript = [ChatMessage("user", str(n)) for n in range(5)]
    _, messages = SimpleContext({"max_messages": 2}).build(TurnContext("", transcript))
    assert _contents(messages) == [("user", "3"), ("user", "4")]
    _, messages = SimpleContext({"max_messages": 10}).build(TurnContext("", transcript))
    assert list(messages) == transcript


def test_max_messages_never_starts_on_an_orphaned_tool_result() -> None:
    transcript = [
        ChatMessage("user", "read both"),
        ChatMessage("assistant", "", tool_calls=()),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCallRequest("c1", "read_file", "{}"),
                ToolCallRequest("c2", "read_file", "{}"),
            ),
        ),
        _result("c1"),
        _result("c2"),
        ChatMessage("assistant", "done"),
    ]
    # The last 3 would start on c2's result, whose assistant call is cut off.
    _, messages = SimpleContext({"max_messages": 3}).build(TurnContext("", transcript))
    assert _contents(messages) == [("assistant", "done")]
    # The last 4 keep the assistant call with both its results.
    _, messages = SimpleContext({"max_messages": 4}).build(TurnContext("", transcript))
    assert [m.role for m in messages] == ["assistant", "tool", "tool", "assistant"]


def test_untrimmed_transcript_is_left_as_given() -> None:
    transcript = [_result("c0"), _call("c1"), _result("c1")]
    _, messages = SimpleContext({"max_messages": 3}).build(TurnContext("", transcript))
    assert list(messages) == transcript


@pytest.mark.parametrize("value", [0, -1, "3", 2.5, True])
def test_invalid_max_messages_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="max_messages"):
        SimpleContext({"max_messages": value})
