"""The name hooks-session-naming makes from a first message."""

from __future__ import annotations

import pytest

from session_service.modules.naming import SessionNamingHook, name_from
from session_service.turns.protocols import HookResult
from session_service.workspace import Sandbox


@pytest.mark.parametrize(
    ("message", "length", "expected"),
    [
        ("Fix the login bug.", 50, "Fix the login bug"),
        ("\n\n  Many   spaces\tand tabs \nsecond line", 50, "Many spaces and tabs"),
        ("Summarize the quarterly report for the board", 20, "Summarize the…"),
        ("Supercalifragilisticexpialidocious", 10, "Supercali…"),
        ("bell\x07 and\x1b[31m escape", 50, "bell and [31m escape"),
        ("   \n\t ", 50, ""),
    ],
)
def test_names(message: str, length: int, expected: str) -> None:
    name = name_from(message, length)
    assert name == expected
    assert len(name) <= length


async def test_the_hook_names_completed_turns_only(tmp_path: object) -> None:
    hook = SessionNamingHook({}, Sandbox(tmp_path))  # type: ignore[arg-type]
    done = {"status": "COMPLETED", "user_turns": 1, "first_user_message": "Hello there"}
    assert await hook.on_event("turn_ending", done) == HookResult(session_name="Hello there")
    assert await hook.on_event("turn_ending", {**done, "status": "FAILED"}) is None
    assert await hook.on_event("turn_end", done) is None
    assert await hook.on_event("turn_start", done) is None
    with pytest.raises(ValueError, match="initial_trigger_turn"):
        SessionNamingHook({"initial_trigger_turn": 0}, Sandbox(tmp_path))  # type: ignore[arg-type]
