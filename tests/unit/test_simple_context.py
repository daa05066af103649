"""context-simple: the system prompt and the messages a provider receives."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from session_service.modules.contexts import (
    CHARS_PER_TOKEN,
    DEFAULT_COMPACT_THRESHOLD,
    MESSAGE_OVERHEAD_TOKENS,
    SimpleContext,
    estimate_tokens,
    message_tokens,
)
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


def _words(n: int, tag: str) -> ChatMessage:
    # 40 characters: 10 estimated tokens, plus the message's framing.
    return ChatMessage("user" if n % 2 == 0 else "assistant", f"{tag}:".ljust(40, "x"))


def _cost(messages: Sequence[ChatMessage]) -> int:
    return sum(message_tokens(m) for m in messages)


def test_tokens_are_estimated_at_about_four_characters_each() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert message_tokens(ChatMessage("user", "x" * 40)) == 10 + MESSAGE_OVERHEAD_TOKENS
    call = ToolCallRequest("c1", "read_file", '{"path": "a.txt"}')
    assert message_tokens(ChatMessage("assistant", "", tool_calls=(call,))) == (
        MESSAGE_OVERHEAD_TOKENS + 1 + 3 + 5
    )


def test_max_tokens_keeps_the_newest_messages_that_fit() -> None:
    transcript = [_words(n, str(n)) for n in range(10)]
    per_message = message_tokens(transcript[0])
    budget = 3 * per_message + per_message // 2
    context = SimpleContext({"max_tokens": budget, "auto_compact": False})
    _, messages = context.build(TurnContext("", transcript))
    assert messages == transcript[-3:]
    assert _cost(messages) <= budget


def test_the_system_prompt_counts_against_max_tokens() -> None:
    transcript = [_words(n, str(n)) for n in range(10)]
    per_message = message_tokens(transcript[0])
    context = SimpleContext({"max_tokens": 4 * per_message, "auto_compact": False})
    _, without = context.build(TurnContext("", transcript))
    # An instruction as costly as two messages leaves room for two.
    instruction = "i" * (CHARS_PER_TOKEN * 2 * per_message)
    _, with_instruction = context.build(TurnContext(instruction, transcript))
    assert len(without) == 4
    assert with_instruction == transcript[-2:]


def test_max_tokens_keeps_tool_calls_and_their_results_together() -> None:
    transcript = [
        ChatMessage("user", "read both files please"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCallRequest("c1", "read_file", "{}"),
                ToolCallRequest("c2", "read_file", "{}"),
            ),
        ),
        ChatMessage("tool", "first file " * 5, tool_call_id="c1"),
        ChatMessage("tool", "second file", tool_call_id="c2"),
        ChatMessage("assistant", "done"),
    ]
    tail = transcript[-1:]
    pair_and_tail = transcript[1:]
    # A budget that would fit the last tool result and the reply, but not the whole pair:
    # the reply alone is sent, never a result without its call.
    context = SimpleContext({"max_tokens": _cost(transcript[3:]), "auto_compact": False})
    _, messages = context.build(TurnContext("", transcript))
    assert messages == tail
    # Room for the pair: the call and both its results come back together.
    context = SimpleContext({"max_tokens": _cost(pair_and_tail), "auto_compact": False})
    _, messages = context.build(TurnContext("", transcript))
    assert messages == pair_and_tail


def test_the_newest_message_is_sent_even_over_the_budget() -> None:
    transcript = [ChatMessage("user", "old"), ChatMessage("user", "y" * 400)]
    _, messages = SimpleContext({"max_tokens": 5}).build(TurnContext("", transcript))
    assert messages == transcript[-1:]
    # And a newest tool pair stays whole.
    pair = [_call("c9"), _result("c9")]
    _, messages = SimpleContext({"max_tokens": 1}).build(TurnContext("", [*transcript, *pair]))
    assert messages == pair


def test_auto_compact_trims_to_the_threshold_and_leaves_the_rest_free() -> None:
    transcript = [_words(n, str(n)) for n in range(10)]
    per_message = message_tokens(transcript[0])
    max_tokens = 10 * per_message
    # Everything fits max_tokens, but not 0.5 of it: compaction keeps the newest half.
    compacting = SimpleContext({"max_tokens": max_tokens, "compact_threshold": 0.5})
    assert compacting.token_limit == 5 * per_message
    _, messages = compacting.build(TurnContext("", transcript))
    assert messages == transcript[-5:]
    # Under the threshold nothing is dropped.
    _, messages = compacting.build(TurnContext("", transcript[-5:]))
    assert messages == transcript[-5:]
    # auto_compact off: only max_tokens trims.
    plain = SimpleContext(
        {"max_tokens": max_tokens, "compact_threshold": 0.5, "auto_compact": False}
    )
    _, messages = plain.build(TurnContext("", transcript))
    assert messages == transcript


def test_auto_compact_is_on_by_default_at_amplifiers_threshold() -> None:
    context = SimpleContext({"max_tokens": 1000})
    assert context.auto_compact is True
    assert context.compact_threshold == DEFAULT_COMPACT_THRESHOLD == 0.92
    assert context.token_limit == 920


def test_without_max_tokens_the_compaction_keys_change_nothing() -> None:
    transcript = [_words(n, str(n)) for n in range(50)]
    context = SimpleContext({"compact_threshold": 0.1, "auto_compact": True})
    assert context.token_limit is None
    _, messages = context.build(TurnContext("", transcript))
    assert messages == transcript


def test_max_messages_and_max_tokens_both_apply() -> None:
    transcript = [_words(n, str(n)) for n in range(10)]
    per_message = message_tokens(transcript[0])
    roomy = SimpleContext({"max_messages": 4, "max_tokens": 100 * per_message})
    assert roomy.build(TurnContext("", transcript))[1] == transcript[-4:]
    tight = SimpleContext({"max_messages": 4, "max_tokens": 2 * per_message, "auto_compact": False})
    assert tight.build(TurnContext("", transcript))[1] == transcript[-2:]


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "128000"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"compact_threshold": 0}, "compact_threshold"),
        ({"compact_threshold": 1.5}, "compact_threshold"),
        ({"compact_threshold": "0.8"}, "compact_threshold"),
        ({"compact_threshold": float("nan")}, "compact_threshold"),
        ({"auto_compact": "yes"}, "auto_compact"),
        ({"auto_compact": 1}, "auto_compact"),
    ],
)
def test_invalid_budget_settings_are_refused(config: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        SimpleContext(config)


def test_amplifier_context_settings_are_accepted() -> None:
    # As Amplifier bundles write them (compare ../shared/examples/packages/acme).
    context = SimpleContext({"max_tokens": 120000, "compact_threshold": 0.8, "auto_compact": True})
    assert context.token_limit == 96000
