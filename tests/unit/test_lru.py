"""Lru forgets the least recently used entry first and says how many it forgot."""

from __future__ import annotations

from shared.lru import Lru


def test_the_least_recently_used_entry_goes_first() -> None:
    held: Lru[str, int] = Lru(2)
    assert held.put("a", 1) == 0
    assert held.put("b", 2) == 0
    assert held.get("a") == 1  # a is now the most recently used
    assert held.put("c", 3) == 1
    assert held.get("b") is None
    assert [key for key, _ in held.items()] == ["a", "c"]
    held.pop("a")
    assert len(held) == 1
    held.clear()
    assert len(held) == 0
