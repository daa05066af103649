"""Deadlines propagate by hand to ConfigService: min(the caller's time remaining, a cap)."""

from __future__ import annotations

import pytest

from session_service.configs_client import call_timeout


@pytest.mark.parametrize(
    ("remaining", "cap", "expected"),
    [
        (None, 5.0, 5.0),  # the caller set no deadline: the cap alone bounds the call
        (30.0, 5.0, 5.0),  # a generous deadline is capped
        (1.5, 5.0, 1.5),  # a tight deadline is passed on as it is
        (-0.2, 5.0, 0.0),  # already expired: the call fails at once instead of waiting
    ],
)
def test_outgoing_calls_get_the_smaller_of_time_remaining_and_cap(
    remaining: float | None, cap: float, expected: float
) -> None:
    assert call_timeout(remaining, cap) == expected
